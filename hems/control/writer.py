"""The writer: shapes the commands over time and sends them to the devices.

Before the guard, each proposed command is rate-limited (`ramp_w_per_s`) from the last one
written. After it, a command is sent only if it changed beyond the deadband, differs where a
safety rule acts, is due for a refresh inside the device-side revert timeout, or follows a
failed write. Each write is a task owned by the writer under its own timeout; the cycle
waits no longer than its write budget, and a device still busy with the previous write is
skipped. A refused value is retried after a refresh period, any other failure with an
exponential backoff. When the loop stops, `hand_back` leaves each device it commanded in
a state that is safe without hems.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices
from hems.control.guard import Guarded
from hems.control.journal import Journal
from hems.control.model import (
    BatteryCommand,
    Command,
    EvCommand,
    Intervention,
    ProcessImage,
    PvCommand,
)
from hems.control.problems import Problems, log
from hems.control.strategies import changed, ramp
from hems.core.capabilities import (
    BatteryControl,
    BatteryMode,
    EvCharger,
    PvInverter,
    SwitchableLoad,
)
from hems.core.clock import Clock
from hems.core.readings import Role
from hems.errors import DeviceRejected


@dataclass(slots=True)
class WriteState:
    """What the writer knows about one device's commands."""

    last_written: Command | None = None
    written_at_s: float = -math.inf  # monotonic
    wanted: Command | None = None
    write_error: str | None = None
    failed_writes: int = 0
    retry_at_s: float = -math.inf


class Writer:
    """Owns each device's write state and the write tasks in flight."""

    def __init__(
        self,
        cfg: ControlConfig,
        devices: ControlledDevices,
        clock: Clock,
        journal: Journal,
        problems: Problems,
        dsr_active: Callable[[], bool],
        on_new_command: Callable[[str], None],
    ) -> None:
        self._cfg = cfg
        self._devices = devices
        self._clock = clock
        self._journal = journal
        self._problems = problems
        self._dsr_active = dsr_active
        self._on_new_command = on_new_command  # a different command was written to a device
        self._states: dict[str, WriteState] = {d: WriteState() for d in devices}
        self._pending: dict[str, asyncio.Task[None]] = {}

    @property
    def states(self) -> Mapping[str, WriteState]:
        """Every controllable device's write state, in registration order."""
        return self._states

    def last_written(self, device_id: str) -> Command | None:
        return self._states[device_id].last_written

    def join(self, device_id: str) -> None:
        """A device registered at run time gets its write state (nothing written yet)."""
        self._states.setdefault(device_id, WriteState())

    def shape(self, commands: Mapping[str, Command], image: ProcessImage) -> dict[str, Command]:
        """Rate-limit each proposed command from the last one written to its device."""
        shaped: dict[str, Command] = {}
        for d, cmd in commands.items():
            st = self._states[d]
            ramp_w = self._cfg.setting(d, "ramp_w_per_s")
            dt_s = image.at_s - st.written_at_s
            shaped[d] = ramp(cmd, st.last_written, dt_s, ramp_w, image.voltage_v)
        return shaped

    async def write(self, image: ProcessImage, guarded: Guarded, safety: set[str]) -> None:
        """Send what is due; `safety`: devices a guard rule acts on (any change is sent)."""
        now_s = image.at_s
        started: list[asyncio.Task[None]] = []
        for d, cmd in guarded.commands.items():
            st = self._states[d]
            st.wanted = cmd
            deadband_w = self._cfg.setting(d, "deadband_w")
            differs = cmd != st.last_written
            due = (
                changed(cmd, st.last_written, deadband_w, self._cfg.deadband_pct, image.voltage_v)
                or (d in safety and differs)
                or now_s - st.written_at_s >= self._cfg.refresh_s
                or st.write_error is not None
            )
            if not due or now_s < st.retry_at_s:
                continue
            task = self._pending.get(d)
            if task is not None and not task.done():
                self._problems.report(
                    f"busy:{d}", "previous write still running; skipped", device=d
                )
                continue
            self._problems.clear(f"busy:{d}", "writes keep up again", device=d)
            timeout_s = self._cfg.setting(d, "write_timeout_s")
            task = asyncio.create_task(self._send(d, cmd, timeout_s), name=f"control:write:{d}")
            self._pending[d] = task
            started.append(task)
        if started:
            await asyncio.wait(started, timeout=self._cfg.budgets.write_s)

    def tasks(self) -> Iterable[asyncio.Task[None]]:
        """Writes in flight or done (for shutdown)."""
        return self._pending.values()

    async def hand_back(self, timeout_s: float) -> dict[str, str]:
        """The loop stops: write each device's safe state once, all at once, within
        `timeout_s` overall (a stop must never hang). Returns what happened per device.

        Only devices hems has commanded: a battery goes back to its own self-consumption
        (normal) mode, a charger to its safe state (the adapter's `apply_safe_state`, the
        charger's configured `safe_state`, else `charger_stale`), PV curtailment is released
        (100 %). Switchable loads keep their last state.
        """
        jobs = {
            d: job
            for d, st in self._states.items()
            if (st.last_written is not None or st.failed_writes)
            and (job := self._safe_job(d, st)) is not None
        }
        outcome: dict[str, str] = {d: "left as it is" for d in self._states if d not in jobs}
        if not jobs:
            return outcome
        tasks = {d: asyncio.ensure_future(job) for d, job in jobs.items()}
        _, late = await asyncio.wait(tasks.values(), timeout=timeout_s)
        for t in late:
            t.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for d, t in tasks.items():
            if t in late:
                outcome[d] = "timeout"
            elif t.exception() is not None:
                outcome[d] = f"failed: {t.exception()}"
            else:
                outcome[d] = str(t.result())
            log.info("control stop: safe state", device=d, outcome=outcome[d])
        return outcome

    def _safe_job(self, device_id: str, st: WriteState) -> Awaitable[str] | None:
        ctrl = self._devices.control(device_id)
        role = self._devices.role(device_id)
        last = st.last_written
        if role is Role.BATTERY:
            battery = cast(BatteryControl, ctrl)
            if BatteryMode.NORMAL not in battery.modes:
                log.warning("control stop: battery has no normal mode; left", device=device_id)
                return None
            return _done(battery.set_mode(BatteryMode.NORMAL), "normal mode")
        if role is Role.EV:
            apply = getattr(ctrl, "apply_safe_state", None)
            if callable(apply):
                return _done(apply(), "its safe state")
            phases = last.phases if isinstance(last, EvCommand) else 1
            fallback = self._cfg.setting(device_id, "charger_stale")
            spec_min_a = self._devices.spec().chargers[device_id].min_current_a
            current_a = spec_min_a if fallback == "minimum" else 0.0
            charger = cast(EvCharger, ctrl)
            return _done(charger.set_limit(current_a, phases), f"{current_a:g} A ({fallback})")
        if role is Role.PV:
            pv = cast(PvInverter, ctrl)
            return _done(pv.set_power_limit_pct(100.0), "curtailment released")
        return None

    async def _send(self, device_id: str, cmd: Command, timeout_s: float) -> None:
        st = self._states[device_id]
        ctrl = self._devices.control(device_id)
        try:
            async with asyncio.timeout(timeout_s):
                # Each command type is built only for a device registered (and checked) with
                # the matching capability, hence the casts.
                if isinstance(cmd, BatteryCommand):
                    await cast(BatteryControl, ctrl).set_mode(cmd.mode, cmd.power_w)
                elif isinstance(cmd, EvCommand):
                    # Inside an accepted aggregator event the change is demand-side response:
                    # GB smart chargers then skip their randomised delay.
                    await cast(EvCharger, ctrl).set_limit(
                        cmd.current_a, cmd.phases, dsr=self._dsr_active()
                    )
                elif isinstance(cmd, PvCommand):
                    await cast(PvInverter, ctrl).set_power_limit_pct(cmd.limit_pct)
                else:
                    await cast(SwitchableLoad, ctrl).set_on(cmd.on)
        except DeviceRejected as exc:
            # The device refused this value: do not hammer it; try again after a refresh.
            self._write_failed(st, device_id, cmd, f"rejected: {exc.reason}", self._cfg.refresh_s)
            return
        except Exception as exc:
            # Anything else is an adapter bug; it still must not take the loop down.
            reason = "timeout" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
            backoff_s = min(self._cfg.refresh_s, self._cfg.cycle_s * 2 ** min(st.failed_writes, 6))
            self._write_failed(st, device_id, cmd, reason, backoff_s)
            return
        if st.write_error is not None:
            log.info("control write recovered", device=device_id, command=cmd.values())
        if cmd != st.last_written:
            self._on_new_command(device_id)
        st.last_written = cmd
        st.written_at_s = self._clock.monotonic()
        st.write_error = None
        st.failed_writes = 0
        st.retry_at_s = -math.inf

    def _write_failed(
        self, st: WriteState, device_id: str, cmd: Command, reason: str, backoff_s: float
    ) -> None:
        if st.write_error is None:
            log.error("control write failed", device=device_id, command=cmd.values(), reason=reason)
            now = self._clock.now()
            self._journal.emit(
                now,
                Intervention("device", device_id, f"write failed: {reason}", {}, cmd.values()),
                "failed",
            )
        st.write_error = reason
        st.failed_writes += 1
        st.retry_at_s = self._clock.monotonic() + backoff_s


async def _done(write: Awaitable[object], what: str) -> str:
    await write
    return what
