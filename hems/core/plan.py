"""The Plan: what the planner publishes and the control loop follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class PlanSlot:
    start: datetime  # aware UTC
    duration_s: float
    price_import_per_kwh: float
    price_export_per_kwh: float
    grid_import_w: float  # expected, >= 0
    grid_export_w: float  # expected, >= 0
    # device_id -> target power [W], signs as readings (+ charge battery / EV draws)
    targets_w: dict[str, float] = field(default_factory=dict)
    # device_id -> expected SoC at slot end [%]
    soc_pct: dict[str, float] = field(default_factory=dict)
    # device_id -> on/off for deferrable loads
    switches: dict[str, bool] = field(default_factory=dict)
    pv_curtail_w: float = 0.0

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)


@dataclass(frozen=True, slots=True)
class Plan:
    created_at: datetime
    slots: tuple[PlanSlot, ...]
    cost: float  # objective currency units (e.g. GBP) over the horizon
    status: str  # "optimal", "feasible" (time limit, gap in the notes), "relaxed" (LP rounded)
    notes: tuple[str, ...] = ()

    def slot_at(self, t: datetime) -> PlanSlot | None:
        for slot in self.slots:
            if slot.start <= t < slot.end:
                return slot
        return None
