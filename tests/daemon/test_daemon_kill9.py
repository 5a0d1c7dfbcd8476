"""kill -9 of the daemon (a real `hems run` subprocess) in the middle of a sunny day on the
HIL rig: nothing writes safe states, so every device must fall back by itself within its
revert time. The SunSpec PV inverter drops its 123 limit (WMaxLimPct_RvrtTms), the battery
its 124 control (InOutWRte_RvrtTms), both `control_revert_s`; the charger's last profile
expires (`validTo`, `ocpp.profile_validity_s`) and it is back on its own default.

The rig and the daemon run at 10x on the same simulated start; the devices' states are
polled on the rig (no fixed sleeps), and each revert is timed on the rig's clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from hems.core.clock import AcceleratedClock
from hil.home import HomeConfig
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import rig_with_car, wait_until

SPEED = 10.0
REVERT_S = 60  # control_revert_s and profile_validity_s (simulated seconds)
START = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


async def test_kill_9_every_device_falls_back_within_its_revert_time(tmp_path: Path) -> None:
    clock = AcceleratedClock(SPEED, START)
    # Far more PV than the battery and the car can take: with a zero export limit the
    # daemon must both charge the battery (124) and curtail the PV (123).
    home = HomeConfig(pv_kwp=25.0, pv_inverter_max_w=20000.0, battery_initial_soc_pct=40.0)
    rig, car, ocpp_port, web_port = rig_with_car(clock, home)
    async with rig:
        raw = demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port)
        for device in raw["devices"]:
            if device["type"] == "sunspec" and device["role"] in ("pv", "battery"):
                device["control_revert_s"] = REVERT_S
            if device["id"] == "pv":
                device["rated_w"] = 20000
            if device["id"] == "wallbox":
                device["max_current_a"] = 16  # below the charger's own 32 A: a visible limit
        raw["limits"]["export_limit_w"] = 0
        raw["control"].update(strategy="self-consumption", ev_strategy="fast")
        raw["ocpp"]["profile_validity_s"] = REVERT_S
        cfg_path = tmp_path / "hems.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        log = (tmp_path / "daemon.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hems.cli", "run", "-c", str(cfg_path),
            "--speed", str(SPEED), "--start", clock.now().isoformat(),
            stdout=log, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        pv, battery = rig.sunspec.pv, rig.sunspec.battery
        try:

            def controlled() -> bool:
                return (
                    pv.value(123, "WMaxLim_Ena") == 1
                    and battery.value(124, "StorCtl_Mod") != 0
                    and bool(car.profiles)
                )

            await wait_until(controlled, 90, "PV curtailed, battery and charger commanded")
            assert pv.value(123, "WMaxLimPct_RvrtTms") == REVERT_S
            assert battery.value(124, "InOutWRte_RvrtTms") == REVERT_S
            limited_a = car.offered_a()
            assert limited_a < car.cfg.max_current_a  # the daemon holds the car below its max
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)  # no signal handler runs, nothing is written
            await proc.wait()
            log.close()
        assert proc.returncode == -signal.SIGKILL
        killed_at = clock.now()

        reverted: dict[str, float] = {}

        def fell_back() -> bool:
            now_s = (clock.now() - killed_at).total_seconds()
            offered_a = car.offered_a()  # what the charger offers now (drops expired profiles)
            checks = {
                "pv": pv.value(123, "WMaxLim_Ena") == 0,
                "battery": battery.value(124, "StorCtl_Mod") == 0,
                "charger": not car.profiles and offered_a == car.cfg.max_current_a,
            }
            for name, ok in checks.items():
                if ok:
                    reverted.setdefault(name, now_s)
            return len(reverted) == len(checks)

        try:
            await wait_until(fell_back, 3 * REVERT_S / SPEED + 10, "every device on its own")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; fell back so far: {reverted}; car {car.profiles}, "
                f"pv {pv.value(123, 'WMaxLim_Ena')}, "
                f"battery {battery.value(124, 'StorCtl_Mod')}"
            ) from None
    # Within its revert time of the kill, plus one rig physics step (the rig checks the
    # SunSpec timers once per step) or one charger meter tick (it expires profiles then).
    step_s = 0.5 * SPEED
    assert reverted["pv"] <= REVERT_S + step_s + 1, reverted
    assert reverted["battery"] <= REVERT_S + step_s + 1, reverted
    assert reverted["charger"] <= REVERT_S + car.cfg.meter_interval_s + 1, reverted
    assert any(what == "profile_expired" for what, _ in car.received)
