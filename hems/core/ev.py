"""An EV session: a car plugged into a charger, when it must leave and what it needs.

One session per charger, kept by `hems.app.evsessions` (which persists it) and handed to the
planner (the charge it plans) and the control loop (energy still wanted by departure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from hems.errors import HemsError

MAX_SESSION_ENERGY_WH = 200_000.0

SessionSource = Literal["default", "owner"]
SocSource = Literal["measured", "manual"]


@dataclass(frozen=True, slots=True)
class EvSession:
    device_id: str
    plugged_at: datetime
    departure: datetime
    energy_wh: float | None  # None: charge what the plan finds worth it
    set_by: SessionSource = "default"  # the charger's configured need, or the owner's
    # When the owner asked for a SoC: the car's SoC they read and the SoC wanted [%]; the
    # energy above was computed from them and the car's capacity.
    soc_pct: float | None = None
    target_soc_pct: float | None = None
    # Where soc_pct came from: the charger's MeterValues (the car, ISO 15118) or the owner's
    # reading on the page. Not stored: a measured SoC is measured again after a restart.
    soc_source: SocSource | None = None

    def __post_init__(self) -> None:
        if self.departure.tzinfo is None or self.plugged_at.tzinfo is None:
            raise HemsError("departure: must carry a time zone offset")
        if self.energy_wh is not None and not (
            math.isfinite(self.energy_wh) and 0 <= self.energy_wh <= MAX_SESSION_ENERGY_WH
        ):
            raise HemsError(f"energy_wh: must be 0..{MAX_SESSION_ENERGY_WH:.0f}")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "energy_wh": self.energy_wh,
            "departure": self.departure.isoformat(),
            "plugged_at": self.plugged_at.isoformat(),
            "set_by": self.set_by,
        }
        if self.target_soc_pct is not None:
            out |= {
                "soc_pct": self.soc_pct,
                "target_soc_pct": self.target_soc_pct,
                "soc_source": self.soc_source or "manual",
            }
        return out


def energy_for_soc(soc_pct: float, target_soc_pct: float, capacity_wh: float) -> float:
    """Energy into the car's battery from `soc_pct` to `target_soc_pct` [Wh] (charging losses
    are the planner's; 0 when the car already has the target). Raises HemsError naming the
    field for a SoC outside 0..100."""
    for name, value in (("soc_pct", soc_pct), ("target_soc_pct", target_soc_pct)):
        if not (math.isfinite(value) and 0 <= value <= 100):
            raise HemsError(f"{name}: must be 0..100")
    return max(0.0, (target_soc_pct - soc_pct) / 100 * capacity_wh)
