"""`hems charger test` end to end: the real command in a subprocess, the simulator in here."""

from __future__ import annotations

import asyncio
import signal
import sys

from ocpp_helpers import stop_task

from hems.core.clock import RealClock
from hil.chargepoint import SimChargePoint, SimConfig, SimQuirks
from hil.ev import EvModel
from tests.testlib import free_port


async def _run_cli(
    *args: str,
    sim_quirks: SimQuirks | None = None,
    version: str = "1.6",
    sim: bool = True,
    ev: EvModel | None = None,
    interrupt_on: str | None = None,
) -> tuple[int, str, SimChargePoint | None]:
    """Run the command against one simulated charger; the simulator is returned, closed.
    `interrupt_on`: send SIGINT once this text is printed."""
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
    cp = None
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
            ev=ev,
            quirks=sim_quirks,
        )
        task = asyncio.create_task(cp.run())
    try:
        out = await asyncio.wait_for(_read(proc, interrupt_on), 30)
    finally:
        if cp is not None and task is not None:
            await cp.aclose()
            await stop_task(task)
    return int(proc.returncode or 0), out, cp


async def _read(proc: asyncio.subprocess.Process, interrupt_on: str | None) -> str:
    assert proc.stdout is not None
    lines = []
    async for raw in proc.stdout:
        line = raw.decode()
        lines.append(line)
        if interrupt_on is not None and interrupt_on in line:
            proc.send_signal(signal.SIGINT)
            interrupt_on = None
    await proc.wait()
    return "".join(lines)


def _left_clean(cp: SimChargePoint | None) -> None:
    """Every call of the charger answered, no profile left on it."""
    assert cp is not None
    # A call the command's closing handshake cut waits ~0 s; one left unanswered, longer.
    assert [c for c in cp.lost_calls if c[1] > 0.5] == [], cp.lost_calls
    assert cp.unanswered == []
    assert cp.profiles == {}


async def test_cli_accepts_charger_and_limit(version: str) -> None:
    code, out, cp = await _run_cli("--limit-a", "10", "--seconds", "6", version=version)
    assert code == 0, out
    assert "boot (accepted): OCPP" in out and "vendor='hems-sim'" in out
    assert "status " in out and "meter power=" in out
    assert "RESULT: limit 10 A accepted" in out
    assert "RESULT: current followed: yes (measured 10.0 A)" in out
    # It stayed for --seconds: meter values kept coming after the verdict.
    after = out.split("current followed: yes")[1]
    assert after.count("meter power=") >= 3, out
    assert "test limit removed (ClearChargingProfile: Accepted)" in out
    _left_clean(cp)


async def test_cli_does_not_claim_followed_before_the_car_charges(version: str) -> None:
    full = EvModel(soc_pct=100.0)  # plugged, takes nothing
    code, out, cp = await _run_cli("--seconds", "4", version=version, ev=full)
    assert code == 3, out
    assert "RESULT: limit 10 A accepted" in out
    assert "current followed: yes" not in out
    assert "RESULT: current followed: not confirmed: the car did not charge" in out
    _left_clean(cp)


async def test_cli_ctrl_c_removes_the_test_limit(version: str) -> None:
    code, out, cp = await _run_cli(
        "--seconds", "60", version=version, interrupt_on="RESULT: limit 10 A accepted"
    )
    assert "interrupted" in out and "test limit removed" in out, out
    assert code in (0, 3), out  # followed, or not yet confirmed when interrupted
    _left_clean(cp)


async def test_cli_only_given_id() -> None:
    code, out, _ = await _run_cli("--id", "OTHER", "--seconds", "2")
    assert code == 2, out
    assert "RESULT: no charger booted in time" in out


async def test_cli_refused_limit_exits_nonzero() -> None:
    code, out, cp = await _run_cli(
        "--id", "GARAGE-1", "--seconds", "20", sim_quirks=SimQuirks(profile_response="Rejected")
    )
    assert code == 1, out
    assert "RESULT: limit NOT accepted" in out
    _left_clean(cp)


async def test_cli_with_quirk_fallback_succeeds() -> None:
    code, out, _ = await _run_cli(
        "--id",
        "GARAGE-1",
        "--quirks",
        "config-maxcurrent-1.6",
        "--limit-a",
        "8",
        "--seconds",
        "5",
        sim_quirks=SimQuirks(profile_response="NotSupported"),
    )
    assert code == 0, out
    assert "via change_configuration: Accepted" in out


async def test_cli_unknown_quirk_profile_is_a_clear_error() -> None:
    code, out, _ = await _run_cli(
        "--id", "GARAGE-1", "--quirks", "nope", "--seconds", "2", sim=False
    )
    assert code == 1
    assert "unknown charger profile 'nope'" in out


async def test_cli_quirks_apply_to_any_id() -> None:
    code, out, _ = await _run_cli(
        "--quirks",
        "config-maxcurrent-1.6",
        "--limit-a",
        "7",
        "--seconds",
        "5",
        sim_quirks=SimQuirks(profile_response="Rejected"),
    )
    assert code == 0, out
    assert "limit 7 A x 3 via change_configuration: Accepted" in out
    assert "it stays until changed on the charger" in out
