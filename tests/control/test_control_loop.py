"""The control loop against fake capability objects, SiteState and a manual clock."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest
from control_helpers import T0, FakeBattery, FakeCharger, FakeLoad, FakePv

from hems.control.config import ControlConfig, StageBudgets
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.capabilities import BatteryMode, EvState
from hems.core.clock import ManualClock
from hems.core.flex import FlexInstruction
from hems.core.plan import Plan, PlanSlot
from hems.core.readings import Quantity as Q
from hems.core.readings import Reading, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.errors import BadValue, ConfigError, DeviceUnreachable
from hems.store.db import Database

SP = BatteryMode.POWER_SETPOINT
LIMITS = LimitsConfig(fuse_a=60, phases=1, export_limit_w=3680, battery_reserve_pct=10)


class Rig:
    def __init__(
        self,
        cfg: ControlConfig | None = None,
        plan: Plan | None = None,
        db: Database | None = None,
        *,
        load: bool = False,
        **fakes,
    ) -> None:
        self.clock = ManualClock(T0)
        self.state = SiteState(self.clock, stale_after_s=10)
        self.bat = fakes.get("bat") or FakeBattery()
        self.ev = fakes.get("ev") or FakeCharger(state=EvState.AVAILABLE)
        self.pv = fakes.get("pv") or FakePv()
        self.load = fakes.get("relay") or FakeLoad()
        devs = ControlledDevices()
        devs.add_battery(self.bat, max_charge_w=5000, max_discharge_w=5000)
        devs.add_charger(self.ev, min_current_a=6, max_current_a=16)
        devs.add_pv(self.pv, rated_w=6000)
        if load:
            devs.add_load(self.load, power_w=2000)
        for d, role in (
            ("grid", Role.GRID),
            ("bat", Role.BATTERY),
            ("ev", Role.EV),
            ("pv", Role.PV),
        ):
            self.state.register_device(d, role)
        self.plan = plan
        self.plan_error: Exception | None = None
        self.fed = 0
        self.loop = ControlLoop(
            cfg or ControlConfig(strategy="self-consumption", ev_strategy="min-pv"),
            LIMITS,
            self.state,
            devs,
            self.clock,
            self._plan,
            db,
            self._feed,
        )

    def _plan(self) -> Plan | None:
        if self.plan_error is not None:
            raise self.plan_error
        return self.plan

    def _feed(self) -> None:
        self.fed += 1

    def publish(self, device: str, **values: float) -> None:
        now = self.clock.now()
        self.state.publish(Reading(device, Q(q), v, now) for q, v in values.items())

    def site(
        self, grid_w: float, bat_w: float = 0, soc: float = 50, ev_w: float = 0, pv_w: float = 0
    ) -> None:
        self.publish("grid", power_w=grid_w)
        self.publish("bat", power_w=bat_w, soc_pct=soc)
        self.publish("ev", power_w=ev_w)
        self.publish("pv", power_w=pv_w)

    async def cycle(self, dt_s: float = 1.0) -> None:
        await self.clock.advance(dt_s)
        await self.loop.step()


async def test_writes_only_beyond_the_deadband_and_refreshes() -> None:
    r = Rig()
    r.site(grid_w=1000)
    await r.loop.step()
    assert r.bat.calls == [(SP, -1000)]
    assert r.ev.calls == [(0.0, 1)]  # nothing plugged: no offer
    assert r.pv.calls == [100.0]
    r.site(grid_w=30, bat_w=-1000)  # the battery followed; 30 W is inside the deadband
    await r.cycle()
    assert len(r.bat.calls) == 1 and len(r.ev.calls) == 1
    r.site(grid_w=400, bat_w=-1000)
    await r.cycle()
    assert r.bat.calls[-1] == (SP, -1400)
    for _ in range(21):  # unchanged commands are re-sent inside the device revert timeout
        r.site(grid_w=0, bat_w=-1400)
        await r.cycle()
    assert len(r.ev.calls) == 2 and r.ev.calls[-1] == (0.0, 1)
    assert r.fed == 24
    assert r.loop.status()["cycles"] == 24


async def test_one_slow_device_never_stalls_the_cycle() -> None:
    cfg = ControlConfig(
        strategy="self-consumption",
        ev_strategy="min-pv",
        write_timeout_s=1.0,
        budgets=StageBudgets(write_s=0.2, snapshot_s=0.05),
    )
    r = Rig(cfg, bat=FakeBattery(delay_s=5.0))
    r.site(grid_w=1000)
    t0 = time.perf_counter()
    await r.loop.step()
    assert time.perf_counter() - t0 < 0.5
    assert r.ev.calls == [(0.0, 1)]  # the others were written
    r.site(grid_w=1500)
    await r.cycle()  # the battery's write is still running: skipped, not piled up
    await asyncio.sleep(1.0)
    await r.cycle()
    st = r.loop.status()["devices"]["bat"]
    assert st["write_error"] == "timeout"
    assert r.bat.calls == []


async def test_slow_charger_state_keeps_last_answer_within_budget() -> None:
    cfg = ControlConfig(ev_strategy="min-pv", budgets=StageBudgets(snapshot_s=0.05))
    r = Rig(cfg, ev=FakeCharger(state_delay_s=0.5, state=EvState.CHARGING))
    r.site(grid_w=0)
    t0 = time.perf_counter()
    await r.loop.step()
    assert time.perf_counter() - t0 < 0.3
    assert r.ev.calls == [(0.0, 1)]  # state unknown yet: no offer
    await asyncio.sleep(0.6)
    r.site(grid_w=0)
    await r.cycle()
    assert r.ev.calls[-1] == (6.0, 1)


async def test_rejected_setpoint_is_logged_and_the_loop_keeps_running(caplog) -> None:
    r = Rig()
    r.bat.reject = True
    r.site(grid_w=1000)
    with caplog.at_level(logging.ERROR):
        await r.loop.step()
    st = r.loop.status()["devices"]["bat"]
    assert "rejected" in st["write_error"] and "illegal value" in st["write_error"]
    calls_before = len(r.ev.calls)
    r.site(grid_w=2000)
    await r.cycle()  # not retried every cycle
    r.bat.reject = False
    for _ in range(30):
        r.site(grid_w=2000)
        await r.cycle()
    assert r.bat.calls and r.bat.calls[-1][0] is SP
    assert r.loop.status()["devices"]["bat"]["write_error"] is None
    assert len(r.ev.calls) >= calls_before


async def test_device_ignoring_commands_is_flagged() -> None:
    r = Rig()
    for _ in range(12):
        r.site(grid_w=1000, bat_w=0)  # the battery never moves
        await r.cycle()
    st = r.loop.status()["devices"]["bat"]
    assert st["ignores_commands"] is True and st["verified"] is False
    for _ in range(2):
        r.site(grid_w=0, bat_w=-1000)
        await r.cycle()
    assert r.loop.status()["devices"]["bat"]["ignores_commands"] is False


async def test_stale_device_goes_safe_and_recovers() -> None:
    r = Rig()
    r.site(grid_w=1000)
    await r.loop.step()
    assert r.bat.calls[-1] == (SP, -1000)
    for _ in range(12):  # battery silent for 12 s (stale after 10 s)
        r.publish("grid", power_w=1000)
        r.publish("ev", power_w=0)
        r.publish("pv", power_w=0)
        await r.cycle()
    assert r.bat.calls[-1] == (BatteryMode.IDLE, 0.0)
    st = r.loop.status()
    assert st["devices"]["bat"]["stale"] is True
    assert any(i["rule"] == "stale" for i in st["active_interventions"])
    r.site(grid_w=1000, bat_w=0)
    await r.cycle()
    assert r.bat.calls[-1] == (SP, -1000)
    assert not any(i["rule"] == "stale" for i in r.loop.status()["active_interventions"])
    ends = [i for i in r.loop.recent_interventions() if i["event"] == "end"]
    assert any(i["rule"] == "stale" and i["device_id"] == "bat" for i in ends)


async def test_overrides_are_validated_and_expire() -> None:
    r = Rig()
    r.site(grid_w=0)
    with pytest.raises(BadValue, match=r"bat: override: target 9000 W outside -5000..5000 W"):
        r.loop.set_override("bat", 9000, T0 + timedelta(hours=1))
    with pytest.raises(BadValue, match="no such controllable device"):
        r.loop.set_override("nope", 1, T0 + timedelta(hours=1))
    with pytest.raises(BadValue, match="in the past"):
        r.loop.set_override("bat", 100, T0 - timedelta(hours=1))
    with pytest.raises(BadValue, match=r"ev: override: target 5000 W outside 0\.\.3680 W"):
        r.loop.set_override("ev", 5000, T0 + timedelta(hours=1))
    r.loop.set_override("bat", -2000, T0 + timedelta(seconds=5))
    await r.loop.step()
    assert r.bat.calls[-1] == (SP, -2000)
    assert "bat" in r.loop.status()["overrides"]
    for _ in range(6):
        r.site(grid_w=-2000, bat_w=-2000)
        await r.cycle()
    assert r.loop.status()["overrides"] == {}
    assert r.bat.calls[-1] == (SP, 0)  # back to self-consumption


async def test_override_cannot_bypass_the_guard() -> None:
    r = Rig(ev=FakeCharger(state=EvState.CHARGING))
    r.site(grid_w=13000, ev_w=0, soc=5)  # the battery is at its reserve: it cannot help
    r.loop.set_override("ev", 3680, T0 + timedelta(hours=1))
    await r.loop.step()
    # 13000 W + 3680 W would blow the 60 A fuse; 570 W of headroom is below 6 A: pause
    assert r.ev.calls[-1] == (0.0, 1)
    assert any(i["rule"] == "fuse" for i in r.loop.recent_interventions())


async def test_missing_plan_and_failing_plan_source_keep_the_loop_running(caplog) -> None:
    r = Rig(ControlConfig(strategy="plan", ev_strategy="plan"))
    r.site(grid_w=500)
    await r.loop.step()  # no plan at all
    assert r.bat.calls[-1] == (SP, -500)
    r.plan_error = RuntimeError("planner crashed")
    r.site(grid_w=700, bat_w=-500)
    await r.cycle()
    assert r.bat.calls[-1] == (SP, -1200)
    slot = PlanSlot(T0, 3600, 0.2, 0.05, 3000, 0, {"bat": 3000, "ev": 0})
    r.plan_error = None
    r.plan = Plan(T0, (slot,), 0.0, "optimal")
    r.site(grid_w=0, bat_w=0)
    await r.cycle()
    assert r.bat.calls[-1] == (SP, 3000)
    assert r.loop.status()["healthy"] is True


async def test_implausible_readings_are_ignored() -> None:
    # The battery may feed the car here, so its set-point shows the whole grid flow.
    cfg = ControlConfig(strategy="self-consumption", ev_strategy="min-pv", ev_from_battery=True)
    r = Rig(cfg, ev=FakeCharger(state=EvState.CHARGING))
    r.site(grid_w=1000, soc=250)  # SoC 250 %: the battery is treated as unknown -> idle
    await r.loop.step()
    assert r.bat.calls[-1] == (BatteryMode.IDLE, 0.0)
    r.site(grid_w=1000, soc=50, ev_w=1380)
    await r.cycle()
    assert r.bat.calls[-1] == (SP, -1000)
    r.site(grid_w=900000, soc=50, ev_w=1380)  # 900 kW at a 60 A connection: not believed
    await r.cycle()
    assert r.ev.calls[-1] == (0.0, 1)  # grid unknown: safe state
    r.site(grid_w=1000, soc=50, ev_w=1380)
    await r.cycle()
    assert r.ev.calls[-1] == (6.0, 1)


async def test_two_grid_meters_are_not_summed(caplog) -> None:
    r = Rig()
    r.state.register_device("p1", Role.GRID)
    r.site(grid_w=1000)
    r.publish("p1", power_w=1000)  # the same flow seen twice
    with caplog.at_level(logging.WARNING):
        await r.loop.step()
    assert r.bat.calls[-1] == (SP, -1000)  # not -2000


async def test_watchdog_fed_only_on_healthy_cycles() -> None:
    r = Rig(ControlConfig(cycle_s=0.5))
    r.site(grid_w=0)
    await r.loop.step()
    assert r.fed == 1

    def slow_plan() -> None:
        time.sleep(0.6)  # a cycle that overruns its period is not healthy

    r.loop._plan_source = slow_plan  # type: ignore[assignment]
    await r.cycle()
    assert r.fed == 1
    assert r.loop.status()["healthy"] is False


async def test_fuse_overload_corrected_in_the_same_cycle() -> None:
    r = Rig(
        ControlConfig(strategy="self-consumption", ev_strategy="fast"),
        ev=FakeCharger(state=EvState.CHARGING),
    )
    r.site(grid_w=5000, ev_w=3680, soc=5)
    await r.loop.step()
    assert r.ev.calls[-1] == (16.0, 1)
    r.site(grid_w=5000 + 10000, ev_w=3680, soc=5)  # a 10 kW step; battery at its reserve
    await r.cycle()
    assert r.ev.calls[-1][0] < 16
    acts = r.loop.recent_interventions()
    assert any(i["rule"] == "fuse" and i["device_id"] == "ev" for i in acts)


async def test_interventions_are_stored(tmp_path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    try:
        r = Rig(db=db)
        r.site(grid_w=1000, soc=5)
        await r.loop.step()
        r.site(grid_w=-6000, soc=100, pv_w=6000)
        await r.cycle()
        await r.loop.flush()
        rows = await db.fetchall(
            "SELECT rule, device_id, event, reason, after_json FROM control_interventions"
        )
        rules = {(row["rule"], row["device_id"], row["event"]) for row in rows}
        assert ("reserve", "bat", "start") in rules
        assert ("export", "pv", "start") in rules
        assert ("g100", "", "start") in rules
        assert all(row["reason"] for row in rows)
    finally:
        await db.close()


async def test_flex_status_tracks_delivery() -> None:
    r = Rig()
    end = T0 + timedelta(hours=1)
    ev = FlexInstruction(
        event_id="evt-1", modification=0, start=T0, end=end, import_cap_w=500, baseline_w=2500
    )
    r.loop.set_flex_event(ev)
    for _ in range(3):
        await r.clock.advance(60)
        r.site(grid_w=500, bat_w=-2000)
        await r.loop.step()
    st = r.loop.flex_status()
    assert st is not None and st["active"]
    assert st["delivered_w"] == pytest.approx(2000)
    assert st["delivered_wh"] == pytest.approx(2000 * 120 / 3600, rel=0.01)
    # expected = delivered so far + current rate over the remaining 57 min
    assert st["expected_delivery_wh"] == pytest.approx(66.7 + 2000 * 57 / 60, rel=0.01)


async def test_run_keeps_cadence_and_stops_cleanly() -> None:
    r = Rig()
    r.site(grid_w=0)
    task = asyncio.create_task(r.loop.run())
    for _ in range(5):
        await asyncio.sleep(0.01)
        r.site(grid_w=0)
        await r.clock.advance(1.0)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 5 <= r.loop.status()["cycles"] <= 6


def test_registry_rejects_wrong_objects() -> None:
    devs = ControlledDevices()
    with pytest.raises(ConfigError, match=r"devices\.pv: does not offer BatteryControl"):
        devs.add_battery(FakePv(), max_charge_w=1, max_discharge_w=1)  # type: ignore[arg-type]
    devs.add_pv(FakePv(), rated_w=1000)
    with pytest.raises(ConfigError, match="added twice"):
        devs.add_pv(FakePv(), rated_w=1000)


async def test_charger_state_offline_is_stale() -> None:
    r = Rig(ev=FakeCharger(state=EvState.OFFLINE))
    r.site(grid_w=0, ev_w=1000)
    await r.loop.step()
    assert r.ev.calls[-1] == (0.0, 1)


async def test_persisting_overload_escalates_down_the_shed_order() -> None:
    # The charger acknowledges its new limit but the car keeps drawing 16 A.
    r = Rig(
        ControlConfig(strategy="plan", ev_strategy="fast"), ev=FakeCharger(state=EvState.CHARGING)
    )
    slot = PlanSlot(T0 - timedelta(minutes=1), 3600, 0.2, 0.05, 0, 0, {"bat": 0})
    r.plan = Plan(T0, (slot,), 0.0, "optimal")
    r.site(grid_w=15000, ev_w=3680, soc=60)
    await r.loop.step()
    assert r.ev.calls[-1][0] < 16  # first cycle: the EV is shed, the battery trusted to wait
    first_bat = r.bat.calls[-1]
    r.site(grid_w=15000, ev_w=3680, soc=60)  # one cycle later: nothing changed
    await r.cycle()
    assert r.bat.calls[-1] != first_bat
    assert r.bat.calls[-1][1] <= -1400  # no credit for the EV: the battery discharges
    assert r.loop.status()["fuse"]["over_now"] is True


async def test_a_shed_load_is_switched_back_on_when_it_fits() -> None:
    r = Rig(load=True)
    r.state.register_device("boiler", Role.LOAD)
    r.site(grid_w=15000, soc=5)  # battery at its reserve: it cannot help
    r.publish("boiler", power_w=2000)
    await r.loop.step()
    assert r.load.calls == [False]
    r.site(grid_w=13000, soc=5)
    r.publish("boiler", power_w=0)
    await r.cycle()
    assert r.load.calls == [False]  # 13000 + 2000 W would not fit yet
    r.site(grid_w=9000, soc=5)
    r.publish("boiler", power_w=0)
    await r.cycle()
    assert r.load.calls == [False, True]
    r.site(grid_w=11000, soc=5)
    r.publish("boiler", power_w=2000)
    await r.cycle()
    assert r.load.calls == [False, True]  # restored once; not toggled again


async def test_an_overload_reading_wakes_the_loop_before_its_next_tick() -> None:
    r = Rig(
        ControlConfig(strategy="self-consumption", ev_strategy="fast", cycle_s=2.0),
        ev=FakeCharger(state=EvState.CHARGING),
    )
    r.site(grid_w=5000, ev_w=3680, soc=5)
    task = asyncio.create_task(r.loop.run())
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert r.ev.calls == [(16.0, 1)]
        await r.clock.advance(0.5)  # mid-period: the kettle and a 10 kW step come on
        r.site(grid_w=16000, ev_w=3680, soc=5)
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert r.ev.calls[-1][0] < 16  # shed 0.5 s in, not at the 2 s tick
        assert r.loop.status()["woken"] == 1
        assert r.clock.monotonic() == 0.5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("instruction", "message"),
    [
        ({"turn_up_floor_w": 3000.0, "baseline_w": 2000.0}, "not a live target \\('turn-up'\\)"),
        ({"price_per_kwh": -0.1, "baseline_w": 2000.0}, "not a live target \\('price'\\)"),
        ({"import_cap_w": 500.0}, "baseline_w must be finite"),
    ],
)
def test_bad_flex_events_are_refused(instruction, message) -> None:
    r = Rig()
    ev = FlexInstruction(
        event_id="evt-9", modification=0, start=T0, end=T0 + timedelta(hours=1), **instruction
    )
    with pytest.raises(BadValue, match=f"evt-9: flex event: {message}"):
        r.loop.set_flex_event(ev)
    assert r.loop.flex_status() is None


def test_registry_from_adapters_uses_config_ratings() -> None:
    from types import SimpleNamespace

    from hems.control.config import DeviceControlConfig as D

    cfg = ControlConfig().with_devices({
        "bat": D(max_charge_w=3000, max_discharge_w=2500),
        "pv": D(rated_w=4000),
        "boiler": D(load_power_w=3000, phase=2),
    })  # fmt: skip
    ocpp_like = FakeCharger("wallbox")
    ocpp_like.cfg = SimpleNamespace(phases=3, min_current_a=6, max_current_a=32)
    ocpp_like.quirks = SimpleNamespace(limit=SimpleNamespace(phase_switching=False))

    class Meter:
        device_id = "grid"

        async def power_w(self) -> float:
            return 0.0

    devs = ControlledDevices.from_adapters(
        cfg, [FakeBattery(), FakePv(), ocpp_like, FakeLoad(), Meter()]
    )
    spec = devs.spec()
    assert spec.batteries["bat"].max_discharge_w == 2500
    assert spec.pvs["pv"].rated_w == 4000
    assert spec.chargers["wallbox"].phases == (3,)  # no switching: never offered as 1-phase
    assert spec.chargers["wallbox"].max_current_a == 32
    assert spec.loads["boiler"].phase == 2
    assert "grid" not in devs
    with pytest.raises(ConfigError, match=r"devices\[bat\]\.battery\.max_charge_w: is required"):
        ControlledDevices.from_adapters(ControlConfig(), [FakeBattery()])


async def test_charger_changes_inside_an_aggregator_event_are_marked_dsr() -> None:
    # GB Smart Charge Points Regulations: a change made for demand-side response skips the
    # charger's randomised delay, so hems must say which changes are DSR.
    r = Rig(ev=FakeCharger(state=EvState.CHARGING))
    r.site(grid_w=1000, ev_w=3000)
    await r.loop.step()
    assert r.ev.dsr_flags and not any(r.ev.dsr_flags)  # no event: ordinary changes
    ev = FlexInstruction(event_id="evt-dsr", modification=0, start=T0 + timedelta(minutes=5),
                         end=T0 + timedelta(hours=1), import_cap_w=0, baseline_w=4000)  # fmt: skip
    r.loop.set_flex_event(ev)
    await r.cycle(400)  # inside the window now
    r.site(grid_w=2500, ev_w=3000)
    await r.cycle()
    r.site(grid_w=2500, ev_w=3000)
    await r.cycle(25)  # past the refresh interval: the charger is written again
    assert r.ev.dsr_flags[-1] is True
    r.loop.set_flex_event(None)
    r.site(grid_w=500, ev_w=1000)
    await r.cycle(25)
    assert r.ev.dsr_flags[-1] is False


async def test_a_load_that_ignores_commands_is_flagged_by_its_own_report() -> None:
    cfg = ControlConfig(
        strategy="self-consumption", ev_strategy="min-pv", verify_after_s=2, verify_failures=3
    )
    r = Rig(cfg, load=True)
    r.state.register_device("boiler", Role.LOAD)
    r.load.ignore = True  # a stuck relay: acknowledges "on", stays off
    r.loop.set_override("boiler", True, T0 + timedelta(hours=1))
    r.site(grid_w=0)
    r.publish("boiler", power_w=0)
    await r.loop.step()
    assert r.load.calls == [True]
    for _ in range(6):
        r.site(grid_w=0)
        r.publish("boiler", power_w=0)
        await r.cycle()
    st = r.loop.status()["devices"]["boiler"]
    assert st["verified"] is False
    assert st["ignores_commands"] is True
    flagged = [i for i in r.loop.recent_interventions() if i["event"] == "flagged"]
    assert [i["device_id"] for i in flagged] == ["boiler"]
    # Someone frees the relay: the load reports on, and is trusted again.
    r.load.ignore, r.load.on = False, True
    r.site(grid_w=0)
    r.publish("boiler", power_w=0)
    await r.cycle()
    st = r.loop.status()["devices"]["boiler"]
    assert st["verified"] is True and st["ignores_commands"] is False


async def test_a_load_on_at_zero_watts_is_not_flagged() -> None:
    # A boiler at temperature: the relay is on, its thermostat draws nothing.
    cfg = ControlConfig(
        strategy="self-consumption", ev_strategy="min-pv", verify_after_s=2, verify_failures=2
    )
    r = Rig(cfg, load=True)
    r.state.register_device("boiler", Role.LOAD)
    r.loop.set_override("boiler", True, T0 + timedelta(hours=1))
    for _ in range(6):
        r.site(grid_w=0)
        r.publish("boiler", power_w=0)
        await r.cycle()
    st = r.loop.status()["devices"]["boiler"]
    assert st["verified"] is True and st["ignores_commands"] is False
    assert r.load.on is True


async def test_a_load_whose_state_cannot_be_read_falls_back_to_its_power() -> None:
    class Unreadable(FakeLoad):
        async def is_on(self) -> bool:
            raise DeviceUnreachable(self.device_id, "no reply")

    load = Unreadable()
    load.ignore, load.on = True, True  # told off, keeps drawing
    cfg = ControlConfig(
        strategy="self-consumption", ev_strategy="min-pv", verify_after_s=2, verify_failures=2
    )
    r = Rig(cfg, load=True, relay=load)
    r.state.register_device("boiler", Role.LOAD)
    r.loop.set_override("boiler", False, T0 + timedelta(hours=1))
    for _ in range(6):
        r.site(grid_w=2000)
        r.publish("boiler", power_w=2000)
        await r.cycle()
    st = r.loop.status()["devices"]["boiler"]
    assert st["ignores_commands"] is True


async def test_a_target_soc_holds_the_charger_until_raised_or_unplugged() -> None:
    """Issue 13: once the car's measured SoC reaches the session's `target_soc_pct` the loop
    offers 0 A (in `fast` mode, which would charge it to full); a higher target gives it
    current again, and unplugging forgets the target."""
    clock = ManualClock(T0)
    state = SiteState(clock, stale_after_s=10)
    ev = FakeCharger(state=EvState.CHARGING)
    devs = ControlledDevices()
    devs.add_charger(ev, min_current_a=6, max_current_a=16)
    for d, role in (("grid", Role.GRID), ("ev", Role.EV)):
        state.register_device(d, role)
    limits = LimitsConfig(fuse_a=60, phases=1, voltage_v=230, export_limit_w=3680)
    loop = ControlLoop(ControlConfig(ev_strategy="fast"), limits, state, devs, clock, lambda: None)

    async def cycle(soc_pct: float) -> float:
        state.publish([Reading("grid", Q.POWER_W, 4000.0, clock.now()),
                       Reading("ev", Q.POWER_W, 3680.0, clock.now()),
                       Reading("ev", Q.SOC_PCT, soc_pct, clock.now())])  # fmt: skip
        await loop.step()
        await clock.advance(1.0)
        return ev.calls[-1][0]

    departure = T0 + timedelta(hours=10)
    loop.set_ev_session("ev", 5000.0, departure, target_soc_pct=80.0)
    assert await cycle(79.0) == 16
    assert await cycle(80.0) == 0  # at the target
    assert await cycle(79.5) == 0  # latched: a reading back under it does not restart it
    loop.set_ev_session("ev", 0.0, departure, target_soc_pct=80.0)  # the same target again
    assert await cycle(80.0) == 0
    loop.set_ev_session("ev", 5000.0, departure, target_soc_pct=90.0)  # the owner wants more
    assert await cycle(80.0) == 16
    assert await cycle(90.5) == 0
    ev.ev_state = EvState.AVAILABLE  # unplugged: the target is forgotten
    await cycle(90.5)
    ev.ev_state = EvState.CHARGING  # the next car, without a SoC target
    assert await cycle(95.0) == 16
    with pytest.raises(BadValue):
        loop.set_ev_session("ev", 0.0, departure, target_soc_pct=120.0)
