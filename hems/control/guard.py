"""The safety guard: the ordered, final word on every command the loop sends.

`apply_guard` is a pure function of the process image, the site's devices, the limits and the
proposed commands. It returns the commands to send wrapped in `Guarded`, which only this
module can build; the loop's writer accepts nothing else, so no plan, aggregator, web or API
target reaches a device without passing here.

Rules, in order (each later rule sees the result of the earlier ones):
1. stale   a device (or the grid meter) without fresh readings gets its safe state.
2. range   targets are clamped to the device's range; unsupported battery modes are mapped.
3. reserve battery SoC at or below the reserve: no discharge (unless an outage is declared).
4. fuse    predicted import per phase (and in total) <= fuse - margin; shed in the
           configured order (EV current, battery charging, deferrable loads, battery
           discharge). A charger that may take longer than the fuse deadline (2 s) to follow
           a new limit (the GB randomised delay, outside demand-side response) is still told
           to reduce, but not counted on: the next step in the order sheds at once.
5. export  predicted export <= agreed limit - margin: the battery absorbs, then PV is curtailed
           (a charger slower than the G100 correction time is not counted on either).
6. ev-min  an EV is never offered less than its minimum current while charging: pause instead.

Predictions are linear: measured grid + (predicted - measured) per device, per phase, where
"measured" is the device's power as the grid reading has it: the grid value may hold any
of a device's readings since the value changed the time before last (a meter read every
10 s, the HIL rig's steps; hems.control.snapshot tracks the range), so whichever is worse
for the rule (`_basis_w`). A
multi-phase site whose grid meter gives no per-phase currents is still guarded per phase, on a
worst-case split: all uncontrolled house load on each phase in turn (`worst_case_phase_a`).
The EV is assumed to take what it is offered (conservative for the fuse; for export too,
unless it declines to draw or its draw fell since the grid reading); PV is assumed not to rise
unless its limit is raised, in which case it may rise up to the new limit (conservative for
export); a raise counts as such until the inverter is seen following it (the snapshot reports
the limit before it until then), not only in the cycle that sent it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from hems.control.config import ControlConfig
from hems.control.model import (
    BatteryCommand,
    BatterySpec,
    ChargerSpec,
    Command,
    EvCommand,
    Intervention,
    LoadCommand,
    ProcessImage,
    PvCommand,
    SiteSpec,
    command_values,
)
from hems.core.capabilities import BatteryMode, EvState
from hems.core.site import LimitsConfig

_TOKEN: Final = object()
FUSE_DEADLINE_S: Final = 2.0  # an overload must be gone within this [s]
_FULL_SOC_PCT: Final = 99.0
_EMPTY_SOC_PCT: Final = 2.0


class Guarded:
    """Commands that passed the guard. Only `apply_guard` can make one."""

    __slots__ = ("commands",)

    def __init__(self, commands: dict[str, Command], token: object) -> None:
        if token is not _TOKEN:
            raise TypeError("device commands must pass the safety guard (use apply_guard)")
        self.commands = dict(commands)


@dataclass(frozen=True, slots=True)
class GuardResult:
    guarded: Guarded
    interventions: tuple[Intervention, ...]
    grid_pred_w: float | None  # predicted grid power after the commands take effect
    phase_pred_a: tuple[float, ...] | None

    @property
    def commands(self) -> dict[str, Command]:
        return self.guarded.commands


@dataclass(slots=True)
class _Work:
    """Mutable working set of one guard pass."""

    image: ProcessImage
    spec: SiteSpec
    limits: LimitsConfig
    cmds: dict[str, Command]
    notes: list[Intervention] = field(default_factory=list)
    distrust: frozenset[str] = frozenset()  # no credit for what these were told to do
    late_import: frozenset[str] = frozenset()  # too slow for the fuse deadline: no credit
    late_export: frozenset[str] = frozenset()  # too slow for the G100 window: no credit

    @property
    def v(self) -> float:
        return self.image.voltage_v

    # -- phase model ---------------------------------------------------------------------
    def per_phase(self) -> bool:
        """Every multi-phase site is guarded phase by phase, measured or not."""
        return self.limits.phases > 1

    def measured_phases(self) -> bool:
        pc = self.image.grid.phase_current_a
        return pc is not None and len(pc) == self.limits.phases and self.per_phase()

    def capacity_a(self, margin_a: float) -> float:
        return self.limits.fuse_a - margin_a

    def shares(self, phase: int | None) -> tuple[float, ...]:
        if not self.per_phase():
            return (1.0,)
        n = self.limits.phases
        if phase is None:
            return tuple(1.0 / n for _ in range(n))
        return tuple(1.0 if i == phase - 1 else 0.0 for i in range(n))

    def worst_case_phase_a(self) -> tuple[float, ...]:
        """Per-phase currents bounded from the total alone, for a multi-phase site whose grid
        meter gives no per-phase values [A].

        Each controlled device is put on its configured phase (a 3-phase one split evenly),
        at its measured power. The rest of the measured import, the house load nobody
        controls, may sit on any phase: each phase is charged with all of it. So phase i
        carries at most (sum of device shares on i + max(0, rest)) / V, whatever the real
        split: no phase can be over the fuse when none of these bounds is. A negative rest
        (meter and devices read at different moments) is taken as 0, never as credit.
        """
        grid = self.image.grid
        assert grid.power_w is not None
        out = [0.0] * self.limits.phases
        devices_w = 0.0
        for power_w, shares in self.measured_devices():
            devices_w += power_w
            for i, s in enumerate(shares):
                out[i] += s * power_w / self.v
        rest_a = max(0.0, grid.power_w - devices_w) / self.v
        return tuple(a + rest_a for a in out)

    def measured_devices(self) -> Iterable[tuple[float, tuple[float, ...]]]:
        """Each controlled device's measured grid import [W] (PV negative) and its shares."""
        for dev_id, b in self.spec.batteries.items():
            yield self.battery_pred_w(dev_id, False)[0], self.shares(b.phase)
        for dev_id, c in self.spec.chargers.items():
            img = self.image.ev(dev_id)
            yield self.ev_pred_w(dev_id, False)[0], self.ev_shares(c, img.phases)
        for dev_id, p in self.spec.pvs.items():
            yield -self.pv_pred_w(dev_id, False)[0], self.shares(p.phase)
        for dev_id, ld in self.spec.loads.items():
            meas, _pred = self.load_pred_w(dev_id, False)
            yield meas, self.shares(ld.phase)

    def ev_shares(self, spec: ChargerSpec, phases: int) -> tuple[float, ...]:
        return self.shares(None if phases > 1 else spec.phase)

    # -- predictions ---------------------------------------------------------------------
    # Each returns (the device's power as the grid reading has it, its predicted power): the
    # prediction starts from its own latest reading, the difference is counted from the
    # power the grid reading already holds (they differ while the grid meter lags the device).
    def battery_pred_w(self, dev_id: str, for_export: bool = False) -> tuple[float, float]:
        img = self.image.battery(dev_id)
        meas = img.power_w or 0.0
        basis = _basis_w(meas, img.grid_span_w, high=for_export)
        cmd = self.cmds.get(dev_id)
        if not isinstance(cmd, BatteryCommand):
            return basis, meas
        mode = cmd.mode
        if mode is BatteryMode.POWER_SETPOINT:
            pred = cmd.power_w
        elif mode is BatteryMode.FORCE_CHARGE:
            pred = abs(cmd.power_w)
        elif mode is BatteryMode.IDLE:
            pred = 0.0
        elif mode is BatteryMode.HOLD_DISCHARGE:
            pred = max(meas, 0.0)
        elif mode is BatteryMode.HOLD_CHARGE:
            pred = min(meas, 0.0)
        else:  # NORMAL: the inverter regulates itself; assume it keeps doing what it does
            pred = meas
        # A full battery cannot take more, an empty one cannot give more, whatever we ask.
        if img.soc_pct is not None and img.soc_pct >= _FULL_SOC_PCT:
            pred = min(pred, max(meas, 0.0))
        if img.soc_pct is not None and img.soc_pct <= _EMPTY_SOC_PCT:
            pred = max(pred, min(meas, 0.0))
        return basis, pred

    def ev_pred_w(self, dev_id: str, for_export: bool = False) -> tuple[float, float]:
        """For the fuse the car takes what it is offered. For export too, unless it declines
        to draw (SuspendedEV) or its draw fell since the grid reading (it stopped or tapered
        by itself, and the grid meter has not shown it yet): then no more than it draws now."""
        img = self.image.ev(dev_id)
        meas = img.power_w or 0.0
        basis = _basis_w(meas, img.grid_span_w, high=for_export)
        cmd = self.cmds.get(dev_id)
        if not isinstance(cmd, EvCommand):
            return basis, meas
        if cmd.current_a <= 0:
            return basis, 0.0
        if img.state in (EvState.AVAILABLE, EvState.FAULTED):
            return basis, 0.0
        offered_w = cmd.current_a * self.v * cmd.phases
        if for_export and (img.state is EvState.SUSPENDED_EV or meas < basis):
            return basis, min(offered_w, meas)
        return basis, offered_w

    def pv_pred_w(self, dev_id: str, for_export: bool) -> tuple[float, float]:
        spec = self.spec.pvs[dev_id]
        img = self.image.pv(dev_id)
        meas = img.power_w or 0.0
        basis = _basis_w(meas, img.grid_span_w, high=not for_export)  # PV lowers import
        cmd = self.cmds.get(dev_id)
        if not isinstance(cmd, PvCommand):
            return basis, meas
        cap_w = spec.rated_w * cmd.limit_pct / 100.0
        if for_export and cmd.limit_pct > img.limit_pct:
            raised_w = spec.rated_w * (cmd.limit_pct - img.limit_pct) / 100.0
            return basis, min(cap_w, meas + raised_w)
        return basis, min(meas, cap_w)

    def load_pred_w(self, dev_id: str, for_export: bool = False) -> tuple[float, float]:
        spec = self.spec.loads[dev_id]
        img = self.image.load(dev_id)
        meas = img.power_w if img.power_w is not None else (spec.power_w if img.on else 0.0)
        basis = _basis_w(meas, img.grid_span_w, high=for_export)
        cmd = self.cmds.get(dev_id)
        if not isinstance(cmd, LoadCommand):
            return basis, meas
        return basis, (spec.power_w if cmd.on else 0.0)

    def deltas(self, for_export: bool) -> Iterable[tuple[float, tuple[float, ...]]]:
        """(predicted - measured) grid import [W] of every device with its phase shares."""
        for dev_id, b in self.spec.batteries.items():
            meas, pred = self.battery_pred_w(dev_id, for_export)
            yield self._credit(dev_id, pred - meas, for_export), self.shares(b.phase)
        for dev_id, c in self.spec.chargers.items():
            meas, pred = self.ev_pred_w(dev_id, for_export)
            cmd = self.cmds.get(dev_id)
            phases = cmd.phases if isinstance(cmd, EvCommand) else 1
            yield self._credit(dev_id, pred - meas, for_export), self.ev_shares(c, phases)
        for dev_id, p in self.spec.pvs.items():
            meas, pred = self.pv_pred_w(dev_id, for_export)
            # more PV = less import
            yield self._credit(dev_id, -(pred - meas), for_export), self.shares(p.phase)
        for dev_id, ld in self.spec.loads.items():
            meas, pred = self.load_pred_w(dev_id, for_export)
            yield self._credit(dev_id, pred - meas, for_export), self.shares(ld.phase)

    def _credit(self, dev_id: str, delta_w: float, for_export: bool) -> float:
        # A distrusted device gets no credit for the change we ask of it, only the blame;
        # nor does one too slow to make it in time.
        late = self.late_export if for_export else self.late_import
        if dev_id not in self.distrust and dev_id not in late:
            return delta_w
        return min(delta_w, 0.0) if for_export else max(delta_w, 0.0)

    def phase_pred_a(self, for_export: bool = False) -> tuple[float, ...]:
        grid = self.image.grid
        assert grid.power_w is not None
        if self.measured_phases():
            assert grid.phase_current_a is not None
            out = list(grid.phase_current_a)
        elif self.per_phase():
            out = list(self.worst_case_phase_a())
        else:
            out = [grid.power_w / self.v]
        for delta_w, shares in self.deltas(for_export):
            for i, s in enumerate(shares):
                out[i] += s * delta_w / self.v
        return tuple(out)

    def grid_pred_w(self, for_export: bool = False) -> float:
        assert self.image.grid.power_w is not None
        return self.image.grid.power_w + sum(d for d, _ in self.deltas(for_export))

    # -- bookkeeping ---------------------------------------------------------------------
    def set(self, dev_id: str, new: Command, rule: str, reason: str) -> None:
        old = self.cmds.get(dev_id)
        if old == new:
            return
        self.cmds[dev_id] = new
        self.notes.append(Intervention(rule, dev_id, reason, command_values(old), new.values()))


def apply_guard(
    image: ProcessImage,
    spec: SiteSpec,
    limits: LimitsConfig,
    cfg: ControlConfig,
    proposed: dict[str, Command],
    import_cap_w: float | None = None,
    distrust: frozenset[str] = frozenset(),
) -> GuardResult:
    """Make `proposed` safe. Pure: same inputs, same output.

    `distrust`: devices whose commands may not take effect (flagged as ignoring commands, or
    every device while a measured overload persists): the guard then takes no credit for
    them and sheds further down the order.
    """
    delays = {d: charger_delay_s(image, c) for d, c in spec.chargers.items()}
    w = _Work(
        image,
        spec,
        limits,
        dict(proposed),
        distrust=distrust,
        late_import=frozenset(d for d, s in delays.items() if s > FUSE_DEADLINE_S),
        late_export=frozenset(d for d, s in delays.items() if s > cfg.g100.correct_within_s),
    )
    _rule_stale(w, cfg)
    _rule_range(w)
    _rule_reserve(w, cfg.outage)
    grid_ok = image.grid.power_w is not None
    if grid_ok:
        _rule_fuse(w, cfg, import_cap_w)
        _rule_export(w, cfg)
    _rule_ev_min(w)
    return GuardResult(
        Guarded(w.cmds, _TOKEN),
        tuple(w.notes),
        w.grid_pred_w() if grid_ok else None,
        w.phase_pred_a() if grid_ok else None,
    )


def _basis_w(measured_w: float, span_w: tuple[float, float] | None, *, high: bool) -> float:
    """The device's power as the grid reading holds it: its own reading, or, while the grid
    meter lags, any of its readings since the grid value changed the time before last. Which
    the grid value holds is not known (a poll can read the meter before or after a device
    around a change, and a meter may update every 10 s), so the worse for the rule at hand:
    `high` the largest (for a consumer, more export predicted; for PV, more import), else the
    smallest. Never less conservative than counting from the device's own reading."""
    if span_w is None:
        return measured_w
    return max(measured_w, span_w[1]) if high else min(measured_w, span_w[0])


def charger_delay_s(image: ProcessImage, spec: ChargerSpec) -> float:
    """How long the charger may take to follow a new limit this cycle [s]."""
    img = image.evs.get(spec.device_id)
    if img is None or img.response_delay_s is None:
        return spec.response_delay_s
    return img.response_delay_s


# -- rules ------------------------------------------------------------------------------------


def _battery_safe(spec: BatterySpec, fallback: str) -> BatteryCommand:
    if fallback == "self-consumption" and BatteryMode.NORMAL in spec.modes:
        return BatteryCommand(BatteryMode.NORMAL)
    for mode in (BatteryMode.IDLE, BatteryMode.POWER_SETPOINT):
        if mode in spec.modes:
            return BatteryCommand(mode, 0.0)
    return BatteryCommand(BatteryMode.NORMAL)


def _charger_safe(spec: ChargerSpec, fallback: str, phases: int) -> EvCommand:
    if fallback == "minimum":
        return EvCommand(spec.min_current_a, phases)
    return EvCommand(0.0, phases)


def _rule_stale(w: _Work, cfg: ControlConfig) -> None:
    grid_stale = w.image.grid.power_w is None
    why_grid = "grid meter stale: limits cannot be checked, safe state"
    for dev_id, b in w.spec.batteries.items():
        img = w.image.battery(dev_id)
        if grid_stale or img.power_w is None or img.soc_pct is None:
            fallback = cfg.setting(dev_id, "battery_stale")
            why = why_grid if grid_stale else f"battery stale: {fallback}"
            w.set(dev_id, _battery_safe(b, fallback), "stale", why)
    for dev_id, c in w.spec.chargers.items():
        img = w.image.ev(dev_id)
        if grid_stale or img.power_w is None:
            fallback = cfg.setting(dev_id, "charger_stale")
            cmd = w.cmds.get(dev_id)
            phases = cmd.phases if isinstance(cmd, EvCommand) else img.phases
            why = why_grid if grid_stale else f"charger stale: {fallback}"
            w.set(dev_id, _charger_safe(c, fallback, phases), "stale", why)
    for dev_id in w.spec.pvs:
        img = w.image.pv(dev_id)
        cmd = w.cmds.get(dev_id)
        if (grid_stale or img.power_w is None) and (
            not isinstance(cmd, PvCommand) or cmd.limit_pct > img.limit_pct
        ):
            why = why_grid if grid_stale else "inverter stale: curtailment kept"
            w.set(dev_id, PvCommand(img.limit_pct), "stale", why)
    for dev_id, ld in w.spec.loads.items():
        img = w.image.load(dev_id)
        if ld.deferrable and (grid_stale or img.stale):
            why = why_grid if grid_stale else "load stale: off"
            w.set(dev_id, LoadCommand(False), "stale", why)


def _rule_range(w: _Work) -> None:
    for dev_id, cmd in list(w.cmds.items()):
        if isinstance(cmd, BatteryCommand) and dev_id in w.spec.batteries:
            b = w.spec.batteries[dev_id]
            new = cmd
            if cmd.mode not in b.modes:
                new = _map_mode(b, cmd)
            lo, hi = -b.max_discharge_w, b.max_charge_w
            if new.mode is BatteryMode.FORCE_CHARGE:
                lo = 0.0
            if not lo <= new.power_w <= hi:
                new = replace(new, power_w=min(hi, max(lo, new.power_w)))
            w.set(dev_id, new, "range", f"battery limits {lo:.0f}..{hi:.0f} W, modes")
        elif isinstance(cmd, EvCommand) and dev_id in w.spec.chargers:
            c = w.spec.chargers[dev_id]
            phases = cmd.phases if cmd.phases in c.phases else max(c.phases)
            current_a = min(max(cmd.current_a, 0.0), c.max_current_a)
            w.set(dev_id, EvCommand(current_a, phases), "range", "charger current/phases")
        elif isinstance(cmd, PvCommand):
            w.set(dev_id, PvCommand(min(100.0, max(0.0, cmd.limit_pct))), "range", "0..100 %")


def _map_mode(b: BatterySpec, cmd: BatteryCommand) -> BatteryCommand:
    """Nearest supported mode for an unsupported one (documented meaning kept or safer)."""
    p = cmd.power_w
    if BatteryMode.POWER_SETPOINT in b.modes:
        if cmd.mode is BatteryMode.IDLE or cmd.mode is BatteryMode.HOLD_DISCHARGE:
            return BatteryCommand(BatteryMode.POWER_SETPOINT, 0.0)
        if cmd.mode is BatteryMode.FORCE_CHARGE:
            return BatteryCommand(BatteryMode.POWER_SETPOINT, abs(p))
    if cmd.mode is BatteryMode.POWER_SETPOINT:
        if p > 0 and BatteryMode.FORCE_CHARGE in b.modes:
            return BatteryCommand(BatteryMode.FORCE_CHARGE, p)
        if p == 0 and BatteryMode.IDLE in b.modes:
            return BatteryCommand(BatteryMode.IDLE)
    return _battery_safe(b, "idle")


def _set_battery_power(w: _Work, b: BatterySpec, power_w: float, rule: str, why: str) -> bool:
    """Command a battery to `power_w` with the best mode it supports; False if it cannot."""
    if BatteryMode.POWER_SETPOINT in b.modes:
        w.set(b.device_id, BatteryCommand(BatteryMode.POWER_SETPOINT, power_w), rule, why)
        return True
    if power_w == 0 and BatteryMode.IDLE in b.modes:
        w.set(b.device_id, BatteryCommand(BatteryMode.IDLE), rule, why)
        return True
    if power_w > 0 and BatteryMode.FORCE_CHARGE in b.modes:
        w.set(b.device_id, BatteryCommand(BatteryMode.FORCE_CHARGE, power_w), rule, why)
        return True
    return False


def _rule_reserve(w: _Work, outage: bool) -> None:
    if outage:
        return
    reserve = w.limits.battery_reserve_pct
    for dev_id, b in w.spec.batteries.items():
        soc = w.image.battery(dev_id).soc_pct
        if soc is None or soc > reserve:
            continue
        cmd = w.cmds.get(dev_id)
        why = f"SoC {soc:.1f} % <= reserve {reserve:.1f} %: no discharge"
        if isinstance(cmd, BatteryCommand) and cmd.mode is BatteryMode.POWER_SETPOINT:
            if cmd.power_w < 0:
                w.set(dev_id, replace(cmd, power_w=0.0), "reserve", why)
        elif cmd is None or (
            isinstance(cmd, BatteryCommand)
            and cmd.mode in (BatteryMode.NORMAL, BatteryMode.HOLD_CHARGE)
        ):
            for mode in (BatteryMode.HOLD_DISCHARGE, BatteryMode.IDLE):
                if mode in b.modes:
                    w.set(dev_id, BatteryCommand(mode), "reserve", why)
                    break
            else:
                _set_battery_power(w, b, 0.0, "reserve", why)


def _excess_a(w: _Work, cap_a: float) -> tuple[float, ...]:
    return tuple(a - cap_a for a in w.phase_pred_a())


def _needed_w(w: _Work, excess: tuple[float, ...], shares: tuple[float, ...]) -> float:
    """Power a device on `shares` must shed so no phase it touches is over."""
    need = 0.0
    for e, s in zip(excess, shares, strict=True):
        if e > 0 and s > 0:
            need = max(need, e * w.v / s)
    return need


def _rule_fuse(w: _Work, cfg: ControlConfig, import_cap_w: float | None) -> None:
    cap_a = w.capacity_a(cfg.fuse_margin_a)
    rule, why = "fuse", f"import over fuse {w.limits.fuse_a:.0f} A"
    if import_cap_w is not None:
        # A flexibility import cap acts like a lower fuse (never a higher one).
        cap_total_a = import_cap_w / w.v
        if cap_total_a < cap_a * (w.limits.phases if w.per_phase() else 1):
            cap_a = cap_total_a / (w.limits.phases if w.per_phase() else 1)
            rule, why = "flex", f"import over event cap {import_cap_w:.0f} W"
    for step in cfg.shed_order:
        if max(_excess_a(w, cap_a)) <= 1e-6:
            return
        if step == "ev":
            _shed_ev(w, cap_a, rule, why)
        elif step == "battery-charge":
            _shed_battery(w, cap_a, rule, why, allow_discharge=False, outage=cfg.outage)
        elif step == "deferrable-loads":
            _shed_loads(w, cap_a, rule, why)
        elif step == "battery-discharge":
            _shed_battery(w, cap_a, rule, why, allow_discharge=True, outage=cfg.outage)


def _shed_ev(w: _Work, cap_a: float, rule: str, why: str) -> None:
    order = sorted(
        (c for c in w.spec.chargers.values() if isinstance(w.cmds.get(c.device_id), EvCommand)),
        key=lambda c: -w.cmds[c.device_id].current_a,  # type: ignore[union-attr]
    )
    for c in order:
        cmd = w.cmds[c.device_id]
        assert isinstance(cmd, EvCommand)
        excess = _excess_a(w, cap_a)
        need_w = _needed_w(w, excess, w.ev_shares(c, cmd.phases))
        if need_w <= 0 or cmd.current_a <= 0:
            continue
        _meas, pred = w.ev_pred_w(c.device_id)
        if pred <= 0:
            continue
        # The EV is predicted at its offer; shed from the offer.
        new_a = cmd.current_a - need_w / (w.v * cmd.phases)
        new_a = 0.0 if new_a < c.min_current_a else int(new_a * 10) / 10  # round down
        reason = why
        if c.device_id in w.late_import:
            delay_s = charger_delay_s(w.image, c)
            reason = f"{why}; charger may take {delay_s:.0f} s: not counted on"
        w.set(c.device_id, EvCommand(new_a, cmd.phases), rule, reason)


def _shed_battery(
    w: _Work, cap_a: float, rule: str, why: str, *, allow_discharge: bool, outage: bool
) -> None:
    for b in w.spec.batteries.values():
        excess = _excess_a(w, cap_a)
        need_w = _needed_w(w, excess, w.shares(b.phase))
        if need_w <= 0:
            continue
        _meas, pred = w.battery_pred_w(b.device_id)
        if allow_discharge:
            soc = w.image.battery(b.device_id).soc_pct
            if soc is None or (soc <= w.limits.battery_reserve_pct and not outage):
                continue
            floor_w = -b.max_discharge_w
        else:
            if pred <= 0:
                continue
            floor_w = 0.0
        new_w = max(floor_w, pred - need_w)
        if new_w < pred:
            _set_battery_power(w, b, new_w, rule, why)


def _shed_loads(w: _Work, cap_a: float, rule: str, why: str) -> None:
    loads = sorted(
        (ld for ld in w.spec.loads.values() if ld.deferrable), key=lambda ld: -ld.power_w
    )
    for ld in loads:
        excess = _excess_a(w, cap_a)
        if _needed_w(w, excess, w.shares(ld.phase)) <= 0:
            continue
        _meas, pred = w.load_pred_w(ld.device_id)
        if pred > 0:
            w.set(ld.device_id, LoadCommand(False), rule, why)


def _rule_export(w: _Work, cfg: ControlConfig) -> None:
    target_w = max(0.0, w.limits.export_limit_w - cfg.g100.margin_w)
    why = f"export over limit {w.limits.export_limit_w:.0f} W"

    def excess_w() -> float:
        return -w.grid_pred_w(for_export=True) - target_w

    for b in w.spec.batteries.values():
        if excess_w() <= 0:
            return
        soc = w.image.battery(b.device_id).soc_pct
        if soc is None or soc >= _FULL_SOC_PCT:
            continue
        _meas, pred = w.battery_pred_w(b.device_id)
        new_w = min(b.max_charge_w, pred + excess_w())
        if new_w > pred:
            _set_battery_power(w, b, new_w, "export", why + ": battery absorbs")
    for p in sorted(w.spec.pvs.values(), key=lambda p: -p.rated_w):
        ex = excess_w()
        if ex <= 0:
            return
        _meas, pred = w.pv_pred_w(p.device_id, for_export=True)
        new_w = max(0.0, pred - ex)
        limit_pct = int(new_w / p.rated_w * 1000) / 10  # round down to 0.1 %
        w.set(p.device_id, PvCommand(limit_pct), "export", why + ": PV curtailed")


def _rule_ev_min(w: _Work) -> None:
    for dev_id, c in w.spec.chargers.items():
        cmd = w.cmds.get(dev_id)
        if isinstance(cmd, EvCommand) and 0 < cmd.current_a < c.min_current_a:
            why = f"offer {cmd.current_a:.1f} A below minimum {c.min_current_a:.1f} A: pause"
            w.set(dev_id, EvCommand(0.0, cmd.phases), "ev-min", why)


# -- time rules: fuse within 2 s, G100 export within 15 s and never over 60 s ----------------


@dataclass(slots=True)
class ExcursionTracker:
    """Counts excursions over a limit and how long each lasted (clock seconds)."""

    correct_within_s: float
    max_s: float
    since_s: float | None = None
    count: int = 0
    late: int = 0  # excursions longer than correct_within_s
    breaches: int = 0  # excursions longer than max_s
    longest_s: float = 0.0
    _late_flag: bool = False
    _breach_flag: bool = False

    def update(self, now_s: float, over: bool) -> str | None:
        """Feed one measurement; returns 'start', 'late', 'breach' or 'end' on a transition."""
        if over:
            if self.since_s is None:
                self.since_s = now_s
                self.count += 1
                self._late_flag = self._breach_flag = False
                return "start"
            dur = now_s - self.since_s
            self.longest_s = max(self.longest_s, dur)
            if dur > self.max_s and not self._breach_flag:
                self._breach_flag = True
                self.breaches += 1
                return "breach"
            if dur > self.correct_within_s and not self._late_flag:
                self._late_flag = True
                self.late += 1
                return "late"
            return None
        if self.since_s is not None:
            self.longest_s = max(self.longest_s, now_s - self.since_s)
            self.since_s = None
            return "end"
        return None

    def duration_s(self, now_s: float) -> float:
        return 0.0 if self.since_s is None else now_s - self.since_s
