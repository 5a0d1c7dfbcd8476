"""On the HIL rig: a clean daemon stop leaves the charger in its safe state and the battery
in its own mode, and the charger's last profile expires by itself afterwards."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from hems.app import Daemon
from hems.config import validate
from hems.core.clock import AcceleratedClock
from hil.chargepoint import SimChargePoint
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import rig_with_car, wait_until


def _limits(car: SimChargePoint) -> list[float]:
    out = []
    for what, profile in car.received:
        if what == "profile":
            period = profile["charging_schedule"]["charging_schedule_period"][0]
            out.append(float(period["limit"]))
    return out


async def test_a_clean_stop_writes_safe_states(tmp_path: Path) -> None:
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig, car, ocpp_port, web_port = rig_with_car(clock)
    async with rig:
        raw = demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port)
        raw["ocpp"]["profile_validity_s"] = 60  # 2 s of real time at 30x
        cfg = validate(raw)
        daemon = Daemon(cfg, clock)
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.started.wait(), 15)
            # Running: the control loop commands the battery and the charger.
            await wait_until(lambda: len(_limits(car)) >= 1, timeout_s=20, what="a limit")
            await wait_until(
                lambda: (
                    daemon.control is not None
                    and daemon.control.status()["devices"]["battery"]["command"] is not None
                ),
                timeout_s=20,
                what="a battery command",
            )
            # The loop's refresh (control.refresh_s) reaches the charger as a new profile
            # with a later validTo, unchanged limit or not.
            await wait_until(lambda: len(_limits(car)) >= 2, timeout_s=20, what="a refresh")
            valid_to = [p["valid_to"] for what, p in car.received if what == "profile"]
            assert valid_to[1] > valid_to[0], valid_to
            sent = len(_limits(car))
        finally:
            task.cancel()  # one cancel, as systemd's SIGTERM gives
            await asyncio.gather(task, return_exceptions=True)
        # The stop wrote the charger's safe state (pause: 0 A) through the live connection.
        assert len(_limits(car)) > sent and _limits(car)[-1] == 0.0, car.received[-5:]
        assert car.offered_a() == 0.0
        assert rig.sunspec.battery.value(124, "StorCtl_Mod") == 0  # its own mode
        # hems is gone: the pause expires and the charger is back on its own default.
        await wait_until(
            lambda: car.offered_a() == car.cfg.max_current_a, timeout_s=10, what="expiry"
        )
        assert car.profiles == {}
