"""The car's measured SoC over real OCPP (hems' central system and hil/chargepoint.py on a
websocket): hems asks for the SoC measurand (1.6 ChangeConfiguration MeterValuesSampledData,
2.0.1 SetVariables SampledDataCtrlr.TxUpdatedMeasurands), the charger sends it in its
MeterValues, and the EV session's energy, handed to the planner, derives from it and the
car's capacity for the configured `ev.target_soc_pct` (issue 13, item 5)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

import hil.chargepoint as hil_cp
import hil.ev as hil_ev
from hems.app.evsessions import EvSessions
from hems.core.clock import RealClock
from hems.core.ev import energy_for_soc
from hems.core.readings import Quantity
from hems.core.state import SiteState
from hems.devices.ocpp.config import ChargerConfig, OcppConfig
from hems.devices.ocpp.server import OcppCentralSystem
from tests.testlib import wait_until

LONDON = ZoneInfo("Europe/London")
PASSWORD = "correct-horse-battery-1"
CAPACITY_WH = 60_000.0
TARGET_SOC_PCT = 80.0
DEFAULT_ENERGY_WH = 20_000.0


class Planner:
    """Records what the planner is told (the planner's own behaviour has its own tests)."""

    def __init__(self) -> None:
        self.energy_wh: list[float | None] = []

    def ev_plugged(
        self,
        charger_id: str,
        *,
        energy_wh: float | None = None,
        departure: datetime | None = None,
        arrival: datetime | None = None,
    ) -> None:
        self.energy_wh.append(energy_wh)

    def ev_unplugged(self, charger_id: str) -> None:
        pass


@contextlib.asynccontextmanager
async def _site(version: str, sends_soc: bool):  # type: ignore[no-untyped-def]
    clock = RealClock()
    cfg = OcppConfig.model_validate(
        {"enabled": True, "host": "127.0.0.1", "meter_value_sample_interval_s": 1,
         "response_timeout_s": 2}
    ).model_copy(update={"port": 0})  # fmt: skip
    cfg = cfg.with_chargers(
        [ChargerConfig(id="wallbox", identity="CP1", password=PASSWORD)]  # type: ignore[arg-type]
    )
    state = SiteState(clock)
    planner = Planner()
    sessions = EvSessions(
        clock,
        LONDON,
        {"wallbox": ("07:00", DEFAULT_ENERGY_WH)},
        planner=planner,
        capacity_wh={"wallbox": CAPACITY_WH},
        state=state,
        target_soc_pct={"wallbox": TARGET_SOC_PCT},
    )
    cs = OcppCentralSystem(cfg, state, clock, listener=sessions.on_charger_event)
    ev = hil_ev.EvModel(battery_kwh=CAPACITY_WH / 1000, soc_pct=30, max_ac_power_w=7400)
    async with asyncio.TaskGroup() as tg:
        cs_task = tg.create_task(cs.run())
        await asyncio.wait_for(cs.started.wait(), 5)
        sim = hil_cp.SimChargePoint(
            hil_cp.SimConfig(
                url=f"ws://127.0.0.1:{cs.port}", identity="CP1", version=version,  # type: ignore[arg-type]
                password=PASSWORD, phases=1, max_current_a=16, meter_interval_s=0.2,
                sends_soc=sends_soc,
            ),
            clock,
            ev=ev,
        )  # fmt: skip
        sim_task = tg.create_task(sim.run())
        try:
            yield sim, sessions, planner, state
        finally:
            sim.stop()
            sim_task.cancel()
            cs_task.cancel()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_the_session_energy_derives_from_the_measured_soc(version: str) -> None:
    async with _site(version, sends_soc=True) as (sim, sessions, planner, state):
        key = (
            "MeterValuesSampledData" if version == "1.6" else "SampledDataCtrlr.TxUpdatedMeasurands"
        )
        await wait_until(lambda: "SoC" in sim.config[key], 10, "the SoC measurand requested")
        await wait_until(
            lambda: (
                (sessions.session("wallbox") or None) is not None
                and sessions.session("wallbox").soc_source == "measured"
            ),  # type: ignore[union-attr]
            10,
            "the session planned from the measured SoC",
        )
        s = sessions.session("wallbox")
        assert s is not None and s.soc_pct is not None and s.energy_wh is not None
        assert 29.0 <= s.soc_pct <= 32.0  # the car's 30 %, as it reported it
        assert s.target_soc_pct == TARGET_SOC_PCT and s.set_by == "default"
        done_wh = state.fresh_value("wallbox", Quantity.SESSION_ENERGY_WH) or 0.0
        want_wh = energy_for_soc(s.soc_pct, TARGET_SOC_PCT, CAPACITY_WH)
        # Counted from plug-in, as the planner counts the session's energy.
        assert s.energy_wh == pytest.approx(want_wh + done_wh, abs=50)
        assert planner.energy_wh[-1] == s.energy_wh
        assert s.energy_wh != DEFAULT_ENERGY_WH  # the SoC target, not the fixed energy
        assert sessions.sessions["wallbox"]["soc_source"] == "measured"


async def test_without_a_soc_the_energy_target_applies() -> None:
    async with _site("1.6", sends_soc=False) as (sim, sessions, planner, state):
        await wait_until(lambda: sim.transaction_id is not None, 10, "a transaction")
        await wait_until(
            lambda: state.fresh_value("wallbox", Quantity.SESSION_ENERGY_WH) is not None,
            10,
            "meter values",
        )
        assert "SoC" not in sim.config["MeterValuesSampledData"]  # rejected, the rest kept
        assert "Power.Active.Import" in sim.config["MeterValuesSampledData"]
        s = sessions.session("wallbox")
        assert s is not None and s.energy_wh == DEFAULT_ENERGY_WH and s.soc_source is None
        assert state.fresh_value("wallbox", Quantity.SOC_PCT) is None
        assert planner.energy_wh[-1] == DEFAULT_ENERGY_WH


async def test_a_fresh_measured_soc_wins_over_the_owners_reading() -> None:
    from datetime import timedelta

    from hems.core.capabilities import EvState
    from hems.core.clock import ManualClock
    from hems.core.readings import Reading, Role
    from hems.devices.ocpp.events import ChargerStatusChanged

    t0 = datetime(2026, 6, 1, 18, 0, tzinfo=LONDON)
    clock = ManualClock(t0)
    state = SiteState(clock)
    state.register_device("wallbox", Role.EV, stale_after_s=30)
    planner = Planner()
    sessions = EvSessions(
        clock,
        LONDON,
        {"wallbox": ("07:00", DEFAULT_ENERGY_WH)},
        planner=planner,
        capacity_wh={"wallbox": CAPACITY_WH},
        state=state,
    )
    sessions.on_charger_event(
        ChargerStatusChanged(
            device_id="wallbox",
            identity="CP1",
            at=t0,
            status="Preparing",
            error_code=None,
            state=EvState.PLUGGED,
        )
    )
    departure = t0 + timedelta(hours=12)
    s = sessions.set_session("wallbox", None, departure, soc_pct=20, target_soc_pct=80)
    assert (s.soc_pct, s.soc_source, s.energy_wh) == (20, "manual", 36_000)
    state.publish([Reading("wallbox", Quantity.SOC_PCT, 50.0, clock.now())])  # the car says
    s = sessions.session("wallbox")
    assert s is not None and (s.soc_pct, s.soc_source, s.energy_wh) == (50, "measured", 18_000)
    assert s.set_by == "owner" and planner.energy_wh[-1] == 18_000
    # Stale: the owner's next reading counts again.
    await clock.advance(60)
    s = sessions.set_session("wallbox", None, departure, soc_pct=60, target_soc_pct=80)
    assert (s.soc_source, s.energy_wh) == ("manual", 12_000)
