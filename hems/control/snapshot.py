"""The snapshot: the process image every cycle decides on, read from the live state.

Grid power and phase currents, each battery, PV inverter, charger and switchable load come
from SiteState; what chargers (`state()`) and loads (`is_on()`) report is asked concurrently
under the snapshot budget, and a call that misses it keeps its last answer and is asked
again next cycle (never started twice). Implausible readings (out of range, or a power jump
beyond `max_step_w` that the next reading does not confirm) are dropped for the cycle; of
several meters claiming the grid flow one is used, never their sum.

A PV limit that went up (the guard lifted a curtailment, or the inverter reverted it) is
reported at its old value until the inverter has had time to follow (`verify_after_s`) and
a reading from after that shows it: the PV's or the grid meter's power has changed since
the raise. Its limit register reads back the new value at once, its power only once it has
followed and been read again, and the guard must not count on the PV staying at the old cap
meanwhile (it predicts a PV under a raised limit rising to it; issue 16's soak found the
battery let discharge into export the cycle after a lift, the PV still read at the old cap).
No time bound: on the HIL rig at high speed the registers change only at its physics steps
(200 simulated s at 400x), and a real meter's reading changes every second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import cast

from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices, response_delay_s
from hems.control.model import (
    BatteryImage,
    Command,
    EvCommand,
    EvImage,
    GridImage,
    LoadCommand,
    LoadImage,
    ProcessImage,
    PvCommand,
    PvImage,
    SiteSpec,
)
from hems.control.problems import Problems
from hems.core.capabilities import EvCharger, EvState, SwitchableLoad
from hems.core.clock import Clock
from hems.core.readings import Quantity, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState

PHASE_POWER = (Quantity.POWER_L1_W, Quantity.POWER_L2_W, Quantity.POWER_L3_W)
_PHASE_CURRENT = (Quantity.CURRENT_L1_A, Quantity.CURRENT_L2_A, Quantity.CURRENT_L3_A)


@dataclass(frozen=True, slots=True)
class _PvRaise:
    """A PV limit that went up and the inverter has not been seen following yet."""

    from_pct: float  # the limit before: what the guard still counts from
    at_s: float  # clock seconds when the raise was seen
    power_w: float | None  # the PV's power reading then
    grid_w: float | None  # the grid meter's then


class Snapshot:
    """Owns the device reports, the plausibility memory and the report calls in flight."""

    def __init__(
        self,
        cfg: ControlConfig,
        limits: LimitsConfig,
        state: SiteState,
        devices: ControlledDevices,
        spec: SiteSpec,
        clock: Clock,
        problems: Problems,
        last_written: Callable[[str], Command | None],
        dsr_active: Callable[[], bool],
    ) -> None:
        self._cfg = cfg
        self._limits = limits
        self._state = state
        self._devices = devices
        self._spec = spec
        self._clock = clock
        self._problems = problems
        self._last_written = last_written
        self._dsr_active = dsr_active
        self._stale: dict[str, bool] = {d: False for d in devices}
        self._ev_state: dict[str, EvState | None] = {}
        self._load_on: dict[str, bool | None] = {}  # what each load reports (is_on)
        self._probes: dict[str, asyncio.Task[object]] = {}  # state / is_on calls in flight
        self._accepted: dict[tuple[str, Quantity], float] = {}
        self._suspect: dict[tuple[str, Quantity], float] = {}
        self._pv_limit: dict[str, float] = {}  # each PV's limit as last read (or written)
        self._pv_raise: dict[str, _PvRaise] = {}
        self._grid_seen_w: float | None = None  # the grid value the spans below go with
        # Each device's (min, max) reading since the grid value last changed, and in the span
        # of the value before (`_grid_spans`).
        self._span_now: dict[str, tuple[float, float]] = {}
        self._span_before: dict[str, tuple[float, float]] = {}

    @property
    def load_on(self) -> Mapping[str, bool | None]:
        """What each switchable load last reported (None: no answer)."""
        return self._load_on

    def stale(self, device_id: str) -> bool:
        """The device is registered in SiteState and its readings are stale."""
        return self._stale[device_id]

    def tasks(self) -> Iterable[asyncio.Task[object]]:
        """Report calls in flight (for shutdown)."""
        return self._probes.values()

    def join(self, device_id: str) -> None:
        """A device registered at run time is watched for staleness too."""
        self._stale.setdefault(device_id, False)

    async def take(self) -> ProcessImage:
        """This cycle's process image."""
        await self._refresh_probes()
        grid_id = self._grid_id()
        v = self._fresh(grid_id or "", Quantity.VOLTAGE_V) or self._limits.voltage_v
        grid = self._grid_image(grid_id, v)
        spec = self._spec
        registered = self._state.devices
        for d in self._stale:
            self._stale[d] = d in registered and self._state.is_stale(d)
        powers = {
            d: self._fresh(d, Quantity.POWER_W)
            for d in (*spec.batteries, *spec.pvs, *spec.chargers, *spec.loads)
        }
        spans = self._grid_spans(grid.power_w, powers)
        batteries = {
            d: BatteryImage(powers[d], self._fresh(d, Quantity.SOC_PCT), spans.get(d))
            for d in spec.batteries
        }
        pvs = {}
        for d in spec.pvs:
            last = self._last_written(d)
            limit = self._fresh(d, Quantity.POWER_LIMIT_PCT)
            if limit is None:
                limit = last.limit_pct if isinstance(last, PvCommand) else 100.0
            power = powers[d]
            counted_pct = self._pv_limit_counted(d, limit, power, grid.power_w)
            pvs[d] = PvImage(power, counted_pct, spans.get(d))
        evs = {}
        dsr = self._dsr_active()
        for d in spec.chargers:
            last = self._last_written(d)
            offered, phases = (
                (last.current_a, last.phases) if isinstance(last, EvCommand) else (0.0, 1)
            )
            ev_state = self._ev_state.get(d)
            power = powers[d]
            if ev_state is EvState.OFFLINE:
                power = None
            delay_s = response_delay_s(self._devices.control(d), dsr)
            ev_span = spans.get(d) if power is not None else None
            evs[d] = EvImage(power, ev_state, offered, phases, delay_s, ev_span)
        loads = {}
        for d in spec.loads:
            last = self._last_written(d)
            # What the load says beats what it was told: it may have ignored us.
            on = self._load_on.get(d)
            if on is None and isinstance(last, LoadCommand):
                on = last.on
            loads[d] = LoadImage(powers[d], on, self._stale[d], spans.get(d))
        return ProcessImage(
            self._clock.now(), self._clock.monotonic(), v, grid, batteries, pvs, evs, loads
        )

    def _grid_spans(
        self, grid_w: float | None, powers: Mapping[str, float | None]
    ) -> dict[str, tuple[float, float]]:
        """Per device, the range of its readings since the grid meter's value changed the time
        before last, where that range is more than its latest reading: the powers the grid
        value may hold.

        A grid value may be older than the device readings beside it (a meter that updates
        every 10 s, a CAD; the HIL rig's registers change only at its steps, while a charger
        reports at once) or newer (a poll round reading the meter before a device around a
        change); the guard takes the worse for each rule (hems.control.guard `_basis_w`).
        Issue 16's soak found both: a car's stop read from the charger before the meter showed
        it let the battery discharge into export for import no longer there, and taking the
        older power as certain let a battery read after the meter discharge the other way.
        """
        if grid_w is None:
            self._grid_seen_w = None
            self._span_now.clear()
            self._span_before.clear()
            return {}
        if grid_w != self._grid_seen_w:
            self._grid_seen_w = grid_w
            self._span_before, self._span_now = self._span_now, {}
        out: dict[str, tuple[float, float]] = {}
        for d, power_w in powers.items():
            if power_w is None:
                continue
            lo, hi = self._span_now.get(d, (power_w, power_w))
            self._span_now[d] = lo, hi = min(lo, power_w), max(hi, power_w)
            if d in self._span_before:
                b_lo, b_hi = self._span_before[d]
                lo, hi = min(lo, b_lo), max(hi, b_hi)
            if lo != power_w or hi != power_w:
                out[d] = (lo, hi)
        return out

    def _pv_limit_counted(
        self, device_id: str, limit_pct: float, power_w: float | None, grid_w: float | None
    ) -> float:
        """The limit the guard counts the PV from: the read one, or the one before a raise
        the inverter has not been seen following yet (see the module doc)."""
        now_s = self._clock.monotonic()
        prev = self._pv_limit.get(device_id)
        self._pv_limit[device_id] = limit_pct
        raised = self._pv_raise.get(device_id)
        if prev is not None and limit_pct > prev:
            from_pct = prev if raised is None else min(prev, raised.from_pct)
            raised = self._pv_raise[device_id] = _PvRaise(from_pct, now_s, power_w, grid_w)
        if raised is None:
            return limit_pct
        if (raised.power_w is None and power_w is not None) or (
            raised.grid_w is None and grid_w is not None
        ):
            # Seen while a reading was missing (a jump held back until confirmed, a stale
            # meter): the first reading since is the reference, not a sign of following.
            raised = self._pv_raise[device_id] = replace(
                raised,
                power_w=power_w if raised.power_w is None else raised.power_w,
                grid_w=grid_w if raised.grid_w is None else raised.grid_w,
            )
        age_s = now_s - raised.at_s
        shown = (power_w is not None and power_w != raised.power_w) or (
            grid_w is not None and grid_w != raised.grid_w
        )
        followed = age_s >= self._cfg.verify_after_s and shown
        if limit_pct <= raised.from_pct or followed:
            del self._pv_raise[device_id]
            return limit_pct
        return raised.from_pct

    async def _refresh_probes(self) -> None:
        """Ask every charger for its state and every switchable load whether it is on,
        concurrently; what misses the budget keeps its last answer and is asked again next
        cycle (a call is never started twice)."""
        for d in (*self._spec.chargers, *self._spec.loads):
            if d in self._probes:
                continue
            ctrl = self._devices.control(d)
            # Registration checked the capability of each charger and load.
            call = (
                cast(EvCharger, ctrl).state()
                if d in self._spec.chargers
                else cast(SwitchableLoad, ctrl).is_on()
            )
            self._probes[d] = asyncio.create_task(call, name=f"control:state:{d}")
        if self._probes:
            await asyncio.wait(self._probes.values(), timeout=self._cfg.budgets.snapshot_s)
        for d, task in list(self._probes.items()):
            if not task.done():
                continue
            del self._probes[d]
            what = "charger state" if d in self._spec.chargers else "load on/off state"
            exc = task.exception()
            value = task.result() if exc is None else None
            if d in self._spec.chargers:
                # Kept as the adapter answered: the strategies and guard compare by identity.
                self._ev_state[d] = cast(EvState | None, value)
            else:
                self._load_on[d] = value if isinstance(value, bool) else None
            if exc is None:
                self._problems.clear(f"state:{d}", f"{what} readable again", device=d)
            else:
                self._problems.report(f"state:{d}", f"{what} unreadable", device=d, error=str(exc))

    def _grid_id(self) -> str | None:
        meters = sorted(d for d, r in self._state.devices.items() if r is Role.GRID)
        if not meters:
            return None
        chosen = self._cfg.grid_meter_id if self._cfg.grid_meter_id in meters else meters[0]
        if len(meters) > 1:
            values = {m: self._state.fresh_value(m, Quantity.POWER_W) for m in meters}
            others = [m for m in meters if m != chosen and values[m] is not None]
            if others:
                self._problems.report(
                    "grid:dup",
                    "several devices report the grid flow; using one, not their sum",
                    using=chosen,
                    ignored=others,
                )
            if values[chosen] is None and others:
                return others[0]  # the chosen meter is stale; another fresh one is better
        return chosen

    def _grid_image(self, grid_id: str | None, v: float) -> GridImage:
        if grid_id is None:
            self._problems.report("grid:none", "no grid meter registered: limits cannot be checked")
            return GridImage(None)
        power = self._fresh(grid_id, Quantity.POWER_W)
        phases: tuple[float, ...] | None = None
        if self._limits.phases > 1:
            by_power = [self._fresh(grid_id, q) for q in PHASE_POWER]
            if all(p is not None for p in by_power):
                phases = tuple(p / v for p in by_power)  # type: ignore[operator]
            else:
                # A current without a sign is taken as import: safe for the fuse.
                by_current = [self._fresh(grid_id, q) for q in _PHASE_CURRENT]
                if all(c is not None for c in by_current):
                    phases = tuple(abs(c) for c in by_current)  # type: ignore[arg-type]
        return GridImage(power, phases)

    def _fresh(self, device_id: str, quantity: Quantity) -> float | None:
        """A fresh value that passes the plausibility checks, else None."""
        value = self._state.fresh_value(device_id, quantity)
        if value is None:
            return None
        key = (device_id, quantity)
        why = self._implausible(device_id, quantity, value)
        if why is None:
            prev = self._accepted.get(key)
            if (
                prev is not None
                and quantity is Quantity.POWER_W
                and abs(value - prev) > self._cfg.max_step_w
            ):
                # A jump may be real if the next reading confirms it.
                suspect = self._suspect.get(key)
                if suspect is None or abs(suspect - value) > 0.1 * abs(value) + 100:
                    self._suspect[key] = value
                    why = f"jumped {value - prev:+.0f} W in one cycle"
        if why is not None:
            self._problems.report(
                f"bad:{device_id}:{quantity}",
                "implausible reading ignored",
                device=device_id,
                quantity=str(quantity),
                value=value,
                why=why,
            )
            return None
        self._suspect.pop(key, None)
        self._accepted[key] = value
        self._problems.clear(
            f"bad:{device_id}:{quantity}",
            "reading plausible again",
            device=device_id,
            quantity=str(quantity),
        )
        return value

    def _implausible(self, device_id: str, quantity: Quantity, value: float) -> str | None:
        if quantity is Quantity.SOC_PCT and not 0 <= value <= 100:
            return "SoC outside 0..100 %"
        if quantity is Quantity.POWER_LIMIT_PCT and not 0 <= value <= 100:
            return "limit outside 0..100 %"
        if quantity is Quantity.VOLTAGE_V and not 100 <= value <= 300:
            return "voltage outside 100..300 V"
        if quantity is not Quantity.POWER_W:
            return None
        spec = self._spec
        bound_w = self._limits.import_limit_w * 3
        if device_id in spec.batteries:
            b = spec.batteries[device_id]
            bound_w = 1.5 * max(b.max_charge_w, b.max_discharge_w) + 500
        elif device_id in spec.pvs:
            if value < -500:
                return "PV power far below zero"
            bound_w = 1.5 * spec.pvs[device_id].rated_w + 500
        elif device_id in spec.chargers:
            bound_w = 1.5 * spec.chargers[device_id].max_power_w(self._limits.voltage_v) + 500
        if abs(value) > bound_w:
            return f"|{value:.0f}| W beyond {bound_w:.0f} W"
        return None
