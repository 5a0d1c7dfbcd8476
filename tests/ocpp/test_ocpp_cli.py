"""`hems charger test` end to end: the real command in a subprocess, the simulator in here."""

from __future__ import annotations

import asyncio
import sys

from ocpp_helpers import stop_task

from hems.core.clock import RealClock
from hil.chargepoint import SimChargePoint, SimConfig, SimQuirks
from tests.testlib import free_port


async def _run_cli(
    *args: str, sim_quirks: SimQuirks | None = None, version: str = "1.6", sim: bool = True
) -> tuple[int, str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hems.cli",
        "charger",
        "test",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    task = None
    if sim:
        cp = SimChargePoint(
            SimConfig(
                url=f"ws://127.0.0.1:{port}",
                identity="GARAGE-1",
                version=version,
                meter_interval_s=0.3,
                reconnect_delay_s=0.1,
            ),
            RealClock(),
            quirks=sim_quirks,
        )
        task = asyncio.create_task(cp.run())
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if task is not None:
            await cp.aclose()
            await stop_task(task)
    return int(proc.returncode or 0), out.decode()


async def test_cli_accepts_charger_and_limit(version: str) -> None:
    code, out = await _run_cli("--limit-a", "10", "--seconds", "20", version=version)
    assert code == 0, out
    assert "boot (accepted): OCPP" in out and "vendor='hems-sim'" in out
    assert "status " in out and "meter power=" in out
    assert "RESULT: limit 10 A accepted" in out
    assert "RESULT: current followed: yes (measured 10.0 A)" in out


async def test_cli_only_given_id() -> None:
    code, out = await _run_cli("--id", "OTHER", "--seconds", "2")
    assert code == 2, out
    assert "RESULT: no charger booted in time" in out


async def test_cli_refused_limit_exits_nonzero() -> None:
    code, out = await _run_cli(
        "--id", "GARAGE-1", "--seconds", "20", sim_quirks=SimQuirks(profile_response="Rejected")
    )
    assert code == 1, out
    assert "RESULT: limit NOT accepted" in out


async def test_cli_with_quirk_fallback_succeeds() -> None:
    code, out = await _run_cli(
        "--id",
        "GARAGE-1",
        "--quirks",
        "config-maxcurrent-1.6",
        "--limit-a",
        "8",
        "--seconds",
        "20",
        sim_quirks=SimQuirks(profile_response="NotSupported"),
    )
    assert code == 0, out
    assert "via change_configuration: Accepted" in out


async def test_cli_unknown_quirk_profile_is_a_clear_error() -> None:
    code, out = await _run_cli("--id", "GARAGE-1", "--quirks", "nope", "--seconds", "2", sim=False)
    assert code == 1
    assert "unknown charger profile 'nope'" in out


async def test_cli_quirks_apply_to_any_id() -> None:
    code, out = await _run_cli(
        "--quirks",
        "config-maxcurrent-1.6",
        "--limit-a",
        "7",
        "--seconds",
        "20",
        sim_quirks=SimQuirks(profile_response="Rejected"),
    )
    assert code == 0, out
    assert "limit 7 A x 3 via change_configuration: Accepted" in out
