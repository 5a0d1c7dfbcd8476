"""Verification: did each device follow the command it was sent?

Once a command has had `verify_after_s` (plus a charger's own response delay) to act, the
cycle's readings are compared with it; a load's own on/off report decides before its power.
`verify_failures` misses in a row flag the device as ignoring commands (journalled, shown in
`status()`, distrusted by the guard) until it follows again. Where the readings cannot tell
(stale, or the device is limited by something else), nothing is counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hems.control.config import ControlConfig
from hems.control.journal import Journal
from hems.control.model import (
    BatteryCommand,
    Command,
    EvCommand,
    Intervention,
    ProcessImage,
    PvCommand,
    SiteSpec,
)
from hems.control.problems import log
from hems.control.writer import WriteState
from hems.core.capabilities import BatteryMode


@dataclass(slots=True)
class FollowState:
    """What verification knows about one device."""

    misses: int = 0  # checks failed in a row
    flagged: bool = False  # ignores commands
    verified: bool | None = None  # the last check's answer; None: not checked yet


class Verifier:
    """Owns each device's follow state."""

    def __init__(
        self, cfg: ControlConfig, spec: SiteSpec, journal: Journal, device_ids: Iterable[str]
    ) -> None:
        self._cfg = cfg
        self._spec = spec
        self._journal = journal
        self._states: dict[str, FollowState] = {d: FollowState() for d in device_ids}

    def state(self, device_id: str) -> FollowState:
        return self._states[device_id]

    def join(self, device_id: str) -> None:
        """A device registered at run time gets its follow state."""
        self._states.setdefault(device_id, FollowState())

    def flagged(self) -> set[str]:
        """Devices that ignore commands."""
        return {d for d, st in self._states.items() if st.flagged}

    def new_command(self, device_id: str) -> None:
        """A different command was written: its misses start from zero."""
        st = self.state(device_id)
        st.misses = 0
        st.verified = None

    def check(
        self,
        image: ProcessImage,
        writes: Mapping[str, WriteState],
        load_on: Mapping[str, bool | None],
    ) -> None:
        """Check every written command that has had time to act against `image`."""
        tol_w = self._cfg.verify_tolerance_w
        for d, w in writes.items():
            cmd = w.last_written
            if cmd is None:
                continue
            settle_s = self._cfg.verify_after_s
            if d in self._spec.chargers:
                settle_s += self._spec.chargers[d].response_delay_s
            if image.at_s - w.written_at_s < settle_s:
                continue
            ok = followed(d, cmd, image, self._spec, tol_w, load_on.get(d))
            if ok is None:
                continue
            st = self.state(d)
            st.verified = ok
            if ok:
                if st.flagged:
                    log.info("device follows commands again", device=d)
                    self._journal.emit(
                        image.at, Intervention("device", d, "follows commands again"), "end"
                    )
                st.misses, st.flagged = 0, False
                continue
            st.misses += 1
            if st.misses >= self._cfg.verify_failures and not st.flagged:
                st.flagged = True
                log.error("device ignores commands", device=d, command=cmd.values())
                self._journal.emit(
                    image.at,
                    Intervention("device", d, "ignores commands", {}, cmd.values()),
                    "flagged",
                )


def followed(
    d: str,
    cmd: Command,
    image: ProcessImage,
    spec: SiteSpec,
    tol_w: float,
    reported_on: bool | None,
) -> bool | None:
    """Did the readings follow `cmd`? None: cannot tell (stale, or limited by the device).

    `reported_on`: a switchable load's own report of whether it is on (None: none).
    """
    if isinstance(cmd, BatteryCommand):
        b = image.batteries.get(d)
        if b is None or b.power_w is None or b.soc_pct is None:
            return None
        if cmd.mode is BatteryMode.IDLE:
            return abs(b.power_w) <= tol_w
        if cmd.mode not in (BatteryMode.POWER_SETPOINT, BatteryMode.FORCE_CHARGE):
            return None
        target = cmd.power_w if cmd.mode is BatteryMode.POWER_SETPOINT else abs(cmd.power_w)
        if (target > 0 and b.soc_pct >= 98) or (target < 0 and b.soc_pct <= 2):
            return None  # the BMS limits it, not the inverter ignoring us
        return abs(b.power_w - target) <= tol_w + 0.05 * abs(target)
    if isinstance(cmd, EvCommand):
        e = image.evs.get(d)
        if e is None or e.power_w is None:
            return None
        # The car may take less than offered; taking more means the limit was ignored.
        return e.power_w <= cmd.current_a * image.voltage_v * cmd.phases + tol_w
    if isinstance(cmd, PvCommand):
        p = image.pvs.get(d)
        if p is None or p.power_w is None:
            return None
        return p.power_w <= spec.pvs[d].rated_w * cmd.limit_pct / 100.0 + tol_w
    # A switchable load: its own report (is_on) decides; without one, a power reading
    # can show that it is off, never that it is on (a thermostat may hold it at 0 W).
    if reported_on is not None:
        return reported_on == cmd.on
    ld = image.loads.get(d)
    if ld is None or ld.power_w is None or cmd.on:
        return None
    return ld.power_w <= tol_w
