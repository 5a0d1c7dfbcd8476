"""Strategies: what each device should do this cycle, before the safety guard.

`propose` is a pure function of the process image, the plan slot, overrides, EV sessions, an
active flexibility event and the EV hysteresis state (which it returns updated). The guard
(`hems.control.guard`) then makes the result safe.

Battery modes (hems.core.capabilities.BatteryMode), as this module uses them:
- plan, POWER_SETPOINT supported: the plan slot's expected grid flow is the set-point and the
  battery absorbs the deviation, kept on the side of the plan's target (a planned charge never
  turns into a discharge, a planned hold only charges from surplus).
- plan, no POWER_SETPOINT: target > 0 -> FORCE_CHARGE, target == 0 -> HOLD_DISCHARGE,
  target < 0 -> NORMAL (the inverter's own self-consumption).
- self-consumption: grid towards 0 W with POWER_SETPOINT, else NORMAL.
- `ev_from_battery: false` (the default): while an EV draws (or is about to), the battery
  discharges at most what the rest of the house takes (its target is computed as if the EVs
  were not there, and only the lower of the two is kept), so PV goes to the car first and the
  home battery is not emptied into it. Without POWER_SETPOINT, NORMAL becomes HOLD_DISCHARGE
  while an EV draws (where offered). Applies in plan-following, self-consumption and flex
  events alike; the safety guard may still discharge the battery to protect the fuse.
EV strategies: plan (slot target, else min-pv), min-pv (minimum current plus any surplus),
pv-only (start/stop thresholds with hysteresis timers), fast, off. With a session departure set,
any strategy charges fast once the remaining energy needs the rest of the time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from hems.control.config import ControlConfig, EvStrategy
from hems.control.model import (
    BatteryCommand,
    BatteryImage,
    BatterySpec,
    ChargerSpec,
    Command,
    EvCommand,
    EvImage,
    Intervention,
    LoadCommand,
    ProcessImage,
    PvCommand,
    SiteSpec,
)
from hems.core.capabilities import EV_PLUGGED, BatteryMode
from hems.core.flex import FlexInstruction
from hems.core.plan import PlanSlot

_EV_DRAWING_W = 100.0  # below this an EV is taken as not drawing (standby, noise)


@dataclass(frozen=True, slots=True)
class Override:
    device_id: str
    target: float | bool  # W for battery/EV, % for PV, on/off for loads
    expires_at: datetime
    # A battery held in one of its own modes (idle, force-charge, …) instead of a setpoint:
    # `target` is then the power for modes that take one (power-setpoint, force-charge).
    mode: BatteryMode | None = None


@dataclass(frozen=True, slots=True)
class EvSession:
    target_energy_wh: float  # energy still wanted when the session was declared
    departure: datetime
    start_energy_wh: float = 0.0  # session energy at declaration


@dataclass(slots=True)
class EvHysteresis:
    """Per-charger memory of the PV-surplus strategy."""

    charging: bool = False
    above_since_s: float | None = None
    below_since_s: float | None = None
    phases: int = 1
    switch_since_s: float | None = None
    last_start_s: float = -math.inf
    last_switch_s: float = -math.inf


@dataclass(slots=True)
class Proposal:
    commands: dict[str, Command] = field(default_factory=dict)
    notes: list[Intervention] = field(default_factory=list)


def propose(
    image: ProcessImage,
    spec: SiteSpec,
    cfg: ControlConfig,
    slot: PlanSlot | None,
    overrides: dict[str, Override],
    sessions: dict[str, EvSession],
    ev_memory: dict[str, EvHysteresis],
    flex: FlexInstruction | None,
    session_energy_wh: dict[str, float] | None = None,
    ev_modes: Mapping[str, EvStrategy] | None = None,
    ev_full: frozenset[str] = frozenset(),
) -> Proposal:
    """Targets for every controllable device; `ev_memory` is updated in place. `ev_modes`:
    the owner's mode per charger, where set (else the configured `ev_strategy`). `ev_full`:
    chargers whose car reached its target SoC, held at 0 A (an owner's override still
    wins)."""
    out = Proposal()
    v = image.voltage_v
    grid_w = image.grid.power_w
    live = {k: o for k, o in overrides.items() if o.expires_at > image.at}
    # EVs first: the battery then covers whatever the EV change leaves on the grid.
    ev_delta_w = 0.0
    ev_meas_w = 0.0  # what the EVs draw now
    ev_pred_w = 0.0  # what they will draw once this cycle's commands take effect
    for dev_id, c in spec.chargers.items():
        img = image.ev(dev_id)
        mem = ev_memory.setdefault(dev_id, EvHysteresis(phases=min(c.phases)))
        if dev_id in live:
            cmd = _ev_from_power(c, float(live[dev_id].target), v)
        elif dev_id in ev_full:
            cmd = EvCommand(0.0, mem.phases)
        else:
            mode: EvStrategy = (ev_modes or {}).get(dev_id) or cfg.setting(dev_id, "ev_strategy")
            energy = (session_energy_wh or {}).get(dev_id)
            cmd = _ev_command(image, c, img, mode, slot, mem, cfg, sessions.get(dev_id), energy)
        out.commands[dev_id] = cmd
        meas_w = max(0.0, img.power_w or 0.0)
        ev_meas_w += meas_w
        if img.power_w is not None and img.state in EV_PLUGGED:
            ev_delta_w += cmd.current_a * v * cmd.phases - img.power_w
            ev_pred_w += cmd.current_a * v * cmd.phases
        else:
            ev_pred_w += meas_w
    for dev_id in spec.loads:
        if dev_id in live:
            out.commands[dev_id] = LoadCommand(bool(live[dev_id].target))
        elif slot is not None and dev_id in slot.switches:
            out.commands[dev_id] = LoadCommand(slot.switches[dev_id])
    grid_after_w = None if grid_w is None else grid_w + ev_delta_w
    # The grid flow as if no EV were charging: the most the battery may cover while one is.
    house_grid_w = None
    if not cfg.ev_from_battery and grid_w is not None and max(ev_meas_w, ev_pred_w) > _EV_DRAWING_W:
        house_grid_w = grid_w - ev_meas_w
    batt_delta_w = 0.0
    # Several batteries share the grid correction by their power, so they do not all chase
    # the same watts (which would multiply the loop gain by their number).
    total_w = sum(b.max_charge_w + b.max_discharge_w for b in spec.batteries.values()) or 1.0
    for dev_id, b in spec.batteries.items():
        img = image.battery(dev_id)
        share = (b.max_charge_w + b.max_discharge_w) / total_w
        if dev_id in live:
            o = live[dev_id]
            cmd_b = BatteryCommand(o.mode or BatteryMode.POWER_SETPOINT, float(o.target))
        else:
            cmd_b = _battery_command(
                b, img, cfg, slot, grid_after_w, flex, image.at, share, house_grid_w
            )
        out.commands[dev_id] = cmd_b
        if cmd_b.mode is BatteryMode.POWER_SETPOINT and img.power_w is not None:
            batt_delta_w += cmd_b.power_w - img.power_w
    if grid_after_w is not None:
        grid_after_w += batt_delta_w
    zero_export = slot is not None and (slot.pv_curtail_w > 0 or slot.price_export_per_kwh < 0)
    for dev_id, p in spec.pvs.items():
        img_p = image.pv(dev_id)
        if dev_id in live:
            out.commands[dev_id] = PvCommand(float(live[dev_id].target))
        elif zero_export and grid_after_w is not None and img_p.power_w is not None:
            # Paid to export nothing: curtail towards 0 W export, release slowly on import.
            step_w = -grid_after_w if grid_after_w < 0 else 0.5 * grid_after_w
            cap_w = (
                max(0.0, img_p.power_w - step_w) if grid_after_w < 0 else (img_p.power_w + step_w)
            )
            out.commands[dev_id] = PvCommand(min(100.0, cap_w / p.rated_w * 100.0))
        else:
            out.commands[dev_id] = PvCommand(100.0)
    return out


# -- EV -----------------------------------------------------------------------------------


def _ev_from_power(c: ChargerSpec, power_w: float, v: float) -> EvCommand:
    """Current and phases for a power target; below half the minimum power: pause."""
    if power_w <= 0:
        return EvCommand(0.0, min(c.phases))
    phases = max(c.phases) if power_w > c.max_current_a * v * min(c.phases) else min(c.phases)
    current_a = power_w / (v * phases)
    if current_a < c.min_current_a:
        current_a = c.min_current_a if current_a >= c.min_current_a / 2 else 0.0
    return EvCommand(min(current_a, c.max_current_a), phases)


def _ev_command(
    image: ProcessImage,
    c: ChargerSpec,
    img: EvImage,
    mode: EvStrategy,
    slot: PlanSlot | None,
    mem: EvHysteresis,
    cfg: ControlConfig,
    session: EvSession | None,
    session_energy_wh: float | None,
) -> EvCommand:
    v = image.voltage_v
    now_s = image.at_s
    if img.state not in EV_PLUGGED or mode == "off":
        mem.charging = False
        mem.above_since_s = mem.below_since_s = None
        return EvCommand(0.0, mem.phases)
    if session is not None and _needs_fast(c, session, session_energy_wh, image.at, v, cfg):
        mem.charging = True
        return EvCommand(c.max_current_a, max(c.phases))
    if mode == "fast":
        return EvCommand(c.max_current_a, max(c.phases))
    if mode == "plan":
        if slot is not None and c.device_id in slot.targets_w:
            return _ev_from_power(c, slot.targets_w[c.device_id], v)
        mode = "min-pv"  # no plan for this slot: the safe, useful default
    grid_w = image.grid.power_w
    if grid_w is None or img.power_w is None:
        return EvCommand(0.0, mem.phases)  # the guard's stale rule decides the fallback
    surplus_w = img.power_w - grid_w
    for b in image.batteries.values():
        if b.power_w is not None and b.power_w > 0 and cfg.strategy == "self-consumption":
            surplus_w += b.power_w  # the EV goes before the battery
    _choose_phases(c, mem, surplus_w, v, now_s, cfg)
    min_w = c.min_current_a * v * mem.phases
    s = cfg.ev_surplus
    if mode == "min-pv":
        mem.charging = True
    elif not mem.charging:
        if surplus_w >= min_w + s.start_surplus_w:
            mem.above_since_s = now_s if mem.above_since_s is None else mem.above_since_s
            if now_s - mem.above_since_s >= s.start_delay_s:
                mem.charging, mem.above_since_s, mem.last_start_s = True, None, now_s
        else:
            mem.above_since_s = None
    else:
        # The charger may hold a start back by a random delay; judge it only after that.
        settled = now_s - mem.last_start_s >= c.response_delay_s
        if surplus_w < min_w + s.stop_surplus_w and settled:
            mem.below_since_s = now_s if mem.below_since_s is None else mem.below_since_s
            if now_s - mem.below_since_s >= s.stop_delay_s:
                mem.charging, mem.below_since_s = False, None
        else:
            mem.below_since_s = None
    if not mem.charging:
        return EvCommand(0.0, mem.phases)
    current_a = min(c.max_current_a, max(c.min_current_a, surplus_w / (v * mem.phases)))
    return EvCommand(int(current_a * 10) / 10, mem.phases)


def _choose_phases(
    c: ChargerSpec, mem: EvHysteresis, surplus_w: float, v: float, now_s: float, cfg: ControlConfig
) -> None:
    if 1 not in c.phases or 3 not in c.phases:
        mem.phases = c.phases[0]
        return
    want = 3 if surplus_w >= c.min_current_a * v * 3 else 1
    if want == mem.phases:
        mem.switch_since_s = None
        return
    mem.switch_since_s = now_s if mem.switch_since_s is None else mem.switch_since_s
    held_s = now_s - mem.switch_since_s
    since_last_s = now_s - mem.last_switch_s
    if held_s >= cfg.ev_surplus.phase_switch_delay_s and since_last_s >= c.response_delay_s:
        mem.phases, mem.switch_since_s, mem.last_switch_s = want, None, now_s


def _needs_fast(
    c: ChargerSpec,
    session: EvSession,
    energy_wh: float | None,
    now: datetime,
    v: float,
    cfg: ControlConfig,
) -> bool:
    delivered_wh = 0.0 if energy_wh is None else max(0.0, energy_wh - session.start_energy_wh)
    left_wh = session.target_energy_wh - delivered_wh
    if left_wh <= 0:
        return False
    need_s = left_wh / c.max_power_w(v) * 3600.0
    time_left_s = (session.departure - now).total_seconds()
    return time_left_s > 0 and need_s + cfg.ev_surplus.departure_margin_s >= time_left_s


def ev_session_done(session: EvSession, energy_wh: float | None) -> bool:
    if energy_wh is None:
        return False
    return energy_wh - session.start_energy_wh >= session.target_energy_wh


# -- battery --------------------------------------------------------------------------------


def _battery_command(
    b: BatterySpec,
    img: BatteryImage,
    cfg: ControlConfig,
    slot: PlanSlot | None,
    grid_after_w: float | None,
    flex: FlexInstruction | None,
    now: datetime,
    share: float = 1.0,
    house_grid_w: float | None = None,
) -> BatteryCommand:
    """`house_grid_w`: set while an EV draws and the battery may not feed it (the grid flow
    without the EVs); the battery then discharges at most that much."""
    setpoint = BatteryMode.POWER_SETPOINT in b.modes
    follow_plan = cfg.strategy == "plan" and slot is not None and b.device_id in slot.targets_w
    if grid_after_w is None or img.power_w is None:
        return BatteryCommand(BatteryMode.NORMAL)  # the guard's stale rule decides
    if not setpoint:
        cmd = BatteryCommand(BatteryMode.NORMAL)
        if follow_plan:
            assert slot is not None
            cmd = _battery_mode_for_plan(b, slot.targets_w[b.device_id])
        if (
            house_grid_w is not None
            and cmd.mode is BatteryMode.NORMAL
            and BatteryMode.HOLD_DISCHARGE in b.modes
        ):
            # The inverter's own self-consumption would discharge into the car.
            cmd = BatteryCommand(BatteryMode.HOLD_DISCHARGE)
        return cmd
    lo, hi = -b.max_discharge_w, b.max_charge_w
    if follow_plan:
        assert slot is not None
        plan_w = slot.targets_w[b.device_id]
        expected_grid_w = slot.grid_import_w - slot.grid_export_w
        target_w = img.power_w - share * (grid_after_w - expected_grid_w)
        lo, hi = (0.0, hi) if plan_w >= 0 else (lo, 0.0)
    else:
        target_w = img.power_w - share * grid_after_w  # grid towards 0 W
    limit_w = flex.live_limit_w if flex is not None else None
    if flex is not None and limit_w is not None and flex.active(now):
        # The live part of an instruction: its import cap, else its export floor.
        if flex.kind == "import-cap":
            target_w = min(target_w, img.power_w - share * (grid_after_w - limit_w))
        else:
            target_w = min(target_w, img.power_w - share * (grid_after_w + limit_w))
        lo = -b.max_discharge_w
    if house_grid_w is not None:
        # Discharge no more than the house without the EVs needs; never force a charge.
        lo = max(lo, min(0.0, img.power_w - share * house_grid_w))
    return BatteryCommand(BatteryMode.POWER_SETPOINT, min(hi, max(lo, target_w)))


def _battery_mode_for_plan(b: BatterySpec, plan_w: float) -> BatteryCommand:
    if plan_w > 0 and BatteryMode.FORCE_CHARGE in b.modes:
        return BatteryCommand(BatteryMode.FORCE_CHARGE, plan_w)
    if plan_w == 0 and BatteryMode.HOLD_DISCHARGE in b.modes:
        return BatteryCommand(BatteryMode.HOLD_DISCHARGE)
    return BatteryCommand(BatteryMode.NORMAL)


# -- shaping: rate limits and deadbands -----------------------------------------------------


def ramp(cmd: Command, last: Command | None, dt_s: float, ramp_w_per_s: float, v: float) -> Command:
    """Limit how far a command moves from the last written one in `dt_s`."""
    if last is None or type(cmd) is not type(last):
        return cmd
    step_w = ramp_w_per_s * max(dt_s, 0.0)
    if isinstance(cmd, BatteryCommand) and isinstance(last, BatteryCommand):
        if cmd.mode is not last.mode:
            return cmd
        delta = max(-step_w, min(step_w, cmd.power_w - last.power_w))
        return BatteryCommand(cmd.mode, last.power_w + delta)
    if isinstance(cmd, EvCommand) and isinstance(last, EvCommand):
        # Only increases are ramped: a decrease (or a pause) is always safe to send at once.
        if cmd.phases != last.phases or cmd.current_a <= last.current_a or last.current_a <= 0:
            return cmd
        step_a = step_w / (v * cmd.phases)
        return EvCommand(min(cmd.current_a, last.current_a + step_a), cmd.phases)
    return cmd


def changed(
    cmd: Command, last: Command | None, deadband_w: float, deadband_pct: float, v: float
) -> bool:
    """True if `cmd` differs from `last` by more than the deadband."""
    if last is None or type(cmd) is not type(last):
        return True
    if isinstance(cmd, BatteryCommand) and isinstance(last, BatteryCommand):
        return cmd.mode is not last.mode or abs(cmd.power_w - last.power_w) > deadband_w
    if isinstance(cmd, EvCommand) and isinstance(last, EvCommand):
        if cmd.phases != last.phases or (cmd.current_a <= 0) != (last.current_a <= 0):
            return True
        return abs(cmd.current_a - last.current_a) * v * cmd.phases > deadband_w
    if isinstance(cmd, PvCommand) and isinstance(last, PvCommand):
        if (cmd.limit_pct >= 100.0) != (last.limit_pct >= 100.0):
            return True
        return abs(cmd.limit_pct - last.limit_pct) > deadband_pct
    return cmd != last
