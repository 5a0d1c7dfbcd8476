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


@dataclass(frozen=True, slots=True)
class EvSession:
    device_id: str
    plugged_at: datetime
    departure: datetime
    energy_wh: float | None  # None: charge what the plan finds worth it
    set_by: SessionSource = "default"  # the charger's configured need, or the owner's

    def __post_init__(self) -> None:
        if self.departure.tzinfo is None or self.plugged_at.tzinfo is None:
            raise HemsError("departure: must carry a time zone offset")
        if self.energy_wh is not None and not (
            math.isfinite(self.energy_wh) and 0 <= self.energy_wh <= MAX_SESSION_ENERGY_WH
        ):
            raise HemsError(f"energy_wh: must be 0..{MAX_SESSION_ENERGY_WH:.0f}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "energy_wh": self.energy_wh,
            "departure": self.departure.isoformat(),
            "plugged_at": self.plugged_at.isoformat(),
            "set_by": self.set_by,
        }
