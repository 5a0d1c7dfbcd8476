"""Pure pieces of the OCPP charger model: state mapping, meter values, limit decisions.

No I/O here; every function is a function of its inputs so the rules are tested by tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from hems.core.capabilities import EvState

# 1.6 ChargePointStatus and 2.0.1 ConnectorStatus / TransactionEvent chargingState, one map.
# Reserved: nothing plugged yet. Unavailable: the operator disabled it, so it cannot charge.
_STATUS: dict[str, EvState] = {
    "Available": EvState.AVAILABLE,
    "Reserved": EvState.AVAILABLE,
    "Preparing": EvState.PLUGGED,
    "Finishing": EvState.PLUGGED,
    "Occupied": EvState.PLUGGED,
    "EVConnected": EvState.PLUGGED,
    "Charging": EvState.CHARGING,
    "SuspendedEV": EvState.SUSPENDED_EV,
    "SuspendedEVSE": EvState.SUSPENDED_EVSE,
    "Faulted": EvState.FAULTED,
    "Unavailable": EvState.FAULTED,
}

# Below this the car is not really drawing (standby of the on-board charger) [W].
DRAWING_THRESHOLD_W = 100.0

SuspendedSemantics = Literal["standard", "ev_when_paused", "charging_at_zero"]


def derive_state(
    status: str | None,
    *,
    online: bool,
    faulted: bool,
    paused_by_us: bool,
    power_w: float | None,
    suspended: SuspendedSemantics = "standard",
) -> EvState:
    """One EvState from what the charger said, what we asked, and what it draws.

    status: the last connector status or 2.0.1 chargingState (spec spelling).
    paused_by_us: our active limit is 0 A.
    power_w: a fresh measured power [W] or None.
    """
    if not online:
        return EvState.OFFLINE
    if faulted:
        return EvState.FAULTED
    state = _STATUS.get(status or "", EvState.AVAILABLE if status is None else EvState.FAULTED)
    if status == "Idle":  # 2.0.1 chargingState Idle: plugged state comes from the connector
        state = EvState.PLUGGED
    drawing = power_w is not None and power_w >= DRAWING_THRESHOLD_W
    if state is EvState.SUSPENDED_EV and paused_by_us and suspended == "ev_when_paused":
        return EvState.SUSPENDED_EVSE
    if state is EvState.CHARGING and power_w is not None and not drawing:
        # Some firmware stays "Charging" at 0 A; say who holds it back.
        if paused_by_us:
            return EvState.SUSPENDED_EVSE
        if suspended == "charging_at_zero":
            return EvState.SUSPENDED_EV
    return state


# -- meter values ----------------------------------------------------------------------------

_SCALE = {
    "Wh": 1.0,
    "kWh": 1000.0,
    "W": 1.0,
    "kW": 1000.0,
    "A": 1.0,
    "V": 1.0,
    "Percent": 1.0,
    "Celsius": 1.0,
    "Celcius": 1.0,
}


@dataclass(slots=True)
class MeterSample:
    """One MeterValues entry in SI-ish units; None where the charger sent nothing."""

    energy_wh: float | None = None  # Energy.Active.Import.Register
    power_w: float | None = None
    current_a: dict[str, float] = field(default_factory=dict)  # "L1".."L3" or "" unphased
    voltage_v: float | None = None
    soc_pct: float | None = None
    offered_current_a: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def max_phase_current_a(self) -> float | None:
        return max(self.current_a.values()) if self.current_a else None

    def merge(self, other: MeterSample) -> None:
        for name in ("energy_wh", "power_w", "voltage_v", "soc_pct", "offered_current_a"):
            if getattr(other, name) is not None:
                setattr(self, name, getattr(other, name))
        self.current_a.update(other.current_a)
        self.problems += other.problems


def _unit_scale(sv: dict[str, Any], default_energy_unit: str) -> tuple[str | None, float]:
    uom = sv.get("unit_of_measure")  # 2.0.1: {"unit": "kWh", "multiplier": 0}
    if isinstance(uom, dict):
        unit = uom.get("unit")
        mult = 10.0 ** int(uom.get("multiplier", 0) or 0)
    else:
        unit = sv.get("unit")
        mult = 1.0
    measurand = sv.get("measurand") or "Energy.Active.Import.Register"
    if unit is None and measurand.startswith("Energy"):
        unit = default_energy_unit
    return unit, _SCALE.get(unit or "", 1.0) * mult


def parse_meter_values(
    meter_value: list[dict[str, Any]], default_energy_unit: str = "Wh"
) -> MeterSample:
    """Fold OCPP MeterValue entries (1.6 or 2.0.1, snake_case keys) into one MeterSample.

    Unknown measurands are ignored; a value that is not a finite number is skipped and
    named in `problems` (missing is never zero).
    """
    out = MeterSample()
    power_by_phase: dict[str, float] = {}
    for entry in meter_value or []:
        for sv in entry.get("sampled_value", []) or []:
            measurand = sv.get("measurand") or "Energy.Active.Import.Register"
            phase = str(sv.get("phase") or "")
            try:
                raw = float(sv.get("value"))
            except (TypeError, ValueError):
                out.problems.append(f"{measurand}: value {sv.get('value')!r} is not a number")
                continue
            if not math.isfinite(raw):
                out.problems.append(f"{measurand}: value {raw} is not finite")
                continue
            _unit, scale = _unit_scale(sv, default_energy_unit)
            value = raw * scale
            if measurand == "Energy.Active.Import.Register":
                if not phase:
                    out.energy_wh = value
            elif measurand == "Power.Active.Import":
                if phase:
                    power_by_phase[phase[:2]] = value
                else:
                    out.power_w = value
            elif measurand == "Current.Import":
                out.current_a[phase[:2] if phase.startswith("L") else ""] = value
            elif measurand == "Voltage":
                if out.voltage_v is None or phase.startswith("L1"):
                    out.voltage_v = value
            elif measurand == "SoC":
                out.soc_pct = value
            elif measurand == "Current.Offered":
                out.offered_current_a = value
    if out.power_w is None and power_by_phase:
        out.power_w = sum(power_by_phase.values())
    if "" in out.current_a and len(out.current_a) > 1:
        del out.current_a[""]  # a total next to per-phase values adds nothing
    return out


def session_energy_wh(register_wh: float | None, meter_start_wh: float | None) -> float | None:
    """Energy of this transaction: the register minus the transaction's own start [Wh].

    Never the lifetime register itself. None when either is unknown; a register below the
    start (a charger reset mid-session) gives None, not a negative number.
    """
    if register_wh is None or meter_start_wh is None:
        return None
    delta = register_wh - meter_start_wh
    return delta if delta >= 0 else None


# -- limits ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitDecision:
    current_a: float  # 0 = pause
    phases: int
    note: str = ""  # why the request was changed, for the log


def decide_limit(
    requested_a: float,
    requested_phases: int,
    *,
    min_current_a: float,
    max_current_a: float,
    max_phases: int,
    active_phases: int,
    phase_switching: bool,
    since_last_switch_s: float | None,
    cooldown_s: float,
) -> LimitDecision:
    """Clamp a requested limit to what the charger and the IEC 61851 minimum allow.

    Below `min_current_a` the charger is paused (0 A): a car cannot charge at less. Phase
    changes need the charger's support and at least `cooldown_s` since the last switch
    (contactors and cars dislike rapid switching).
    """
    if not math.isfinite(requested_a) or requested_a < 0:
        raise ValueError(f"current_a: {requested_a} must be a finite number >= 0")
    if requested_phases not in (1, 3):
        raise ValueError(f"phases: {requested_phases} must be 1 or 3")
    notes: list[str] = []
    phases = requested_phases
    if phases > max_phases:
        phases = max_phases
        notes.append(f"charger is wired for {max_phases} phase(s)")
    if phases != active_phases:
        if not phase_switching:
            notes.append("charger cannot switch phases")
            phases = active_phases
        elif since_last_switch_s is not None and since_last_switch_s < cooldown_s:
            wait_s = cooldown_s - since_last_switch_s
            notes.append(f"phase switch held for cooldown ({wait_s:.0f} s left)")
            phases = active_phases
    if requested_a < min_current_a:
        if requested_a > 0:
            notes.append(f"{requested_a:g} A is below the {min_current_a:g} A minimum: pause")
        return LimitDecision(0.0, phases, "; ".join(notes))
    current_a = min(requested_a, max_current_a)
    if current_a < requested_a:
        notes.append(f"clamped to max {max_current_a:g} A")
    return LimitDecision(round(current_a, 1), phases, "; ".join(notes))


def followed(limit_a: float, measured_max_phase_a: float | None, tolerance_a: float) -> bool | None:
    """Did the measured current obey the limit? None when there is no measurement.

    Drawing less than the limit counts as obeying (the car may want less).
    """
    if measured_max_phase_a is None:
        return None
    if limit_a <= 0:
        return measured_max_phase_a <= tolerance_a
    return measured_max_phase_a <= limit_a + tolerance_a
