"""A simple EV for the charge-point simulator: battery, SoC, on-board charger, taper.

The on-board charger draws what the EVSE offers (per phase, IEC 61851 pilot) up to its own
maximum AC power; above `taper_from_pct` the acceptance falls linearly to
`taper_floor_frac` of the maximum at 100 % (a CC/CV charge seen from the AC side).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

IEC_MIN_CURRENT_A = 6.0  # a car cannot charge below 6 A per phase (IEC 61851-1)


@dataclass(slots=True)
class EvModel:
    battery_kwh: float = 60.0
    soc_pct: float = 40.0
    max_ac_power_w: float = 11_000.0
    phases: int = 3  # phases the on-board charger uses
    target_soc_pct: float = 100.0
    taper_from_pct: float = 80.0
    taper_floor_frac: float = 0.1
    charge_efficiency: float = 0.92  # AC energy to battery energy
    plug_in_at: datetime | None = None  # None: plugged in from the start
    leave_at: datetime | None = None  # None: stays

    def __post_init__(self) -> None:
        if self.battery_kwh <= 0 or self.max_ac_power_w <= 0:
            raise ValueError("battery_kwh and max_ac_power_w must be > 0")
        if not 0 <= self.soc_pct <= 100:
            raise ValueError("soc_pct must be 0..100")
        if self.phases not in (1, 3):
            raise ValueError("phases must be 1 or 3")

    def plugged(self, now: datetime) -> bool:
        if self.plug_in_at is not None and now < self.plug_in_at:
            return False
        return self.leave_at is None or now < self.leave_at

    def acceptance_w(self) -> float:
        """What the car would take right now [W], before the EVSE's offer."""
        if self.soc_pct >= self.target_soc_pct:
            return 0.0
        if self.soc_pct <= self.taper_from_pct:
            return self.max_ac_power_w
        span = max(1e-9, 100.0 - self.taper_from_pct)
        frac = max(self.taper_floor_frac, (100.0 - self.soc_pct) / span)
        return self.max_ac_power_w * frac

    def draw_a(self, offered_a: float, evse_phases: int, voltage_v: float) -> tuple[float, int]:
        """Per-phase current [A] and phases used for an EVSE offer of `offered_a` per phase."""
        phases = min(self.phases, evse_phases)
        if offered_a < IEC_MIN_CURRENT_A:
            return 0.0, phases
        wanted_a = self.acceptance_w() / (voltage_v * phases)
        return min(offered_a, wanted_a), phases

    def step(self, ac_power_w: float, dt_s: float) -> None:
        """Advance the battery by `dt_s` at `ac_power_w`."""
        added_kwh = ac_power_w * dt_s / 3_600_000.0 * self.charge_efficiency
        self.soc_pct = min(100.0, self.soc_pct + 100.0 * added_kwh / self.battery_kwh)
