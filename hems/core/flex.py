"""The flexibility instruction: what an accepted event asks of the home, in one shape.

hems.flex produces these from the events it accepted; the planner turns them into plan
constraints or a price signal, the control loop follows one of them live. All powers are W at
the connection point, + = import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

InstructionKind = Literal["import-cap", "export-floor", "turn-up", "price"]
LIVE_KINDS: frozenset[InstructionKind] = frozenset({"import-cap", "export-floor"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexInstruction:
    """One accepted event as an instruction for [start, end).

    import_cap_w: import at most; export_floor_w: export at least; turn_up_floor_w: net import
    (import − export) at least, negative = export at most −value. price_per_kwh: the
    aggregator's import price in the window (followed only when no power is asked for).
    baseline_w: the event's baseline net import, for live delivery tracking (None = unknown).
    """

    event_id: str
    modification: int
    start: datetime  # aware
    end: datetime  # aware
    import_cap_w: float | None = None
    export_floor_w: float | None = None
    turn_up_floor_w: float | None = None
    price_per_kwh: float | None = None
    baseline_w: float | None = None

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("event_id: must be non-empty")
        if self.modification < 0:
            raise ValueError(f"{self.event_id}: modification must be >= 0")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError(f"{self.event_id}: start and end must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"{self.event_id}: end must be after start")
        for name in (
            "import_cap_w",
            "export_floor_w",
            "turn_up_floor_w",
            "price_per_kwh",
            "baseline_w",
        ):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{self.event_id}: {name} must be finite, got {value!r}")
        for name in ("import_cap_w", "export_floor_w"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{self.event_id}: {name} must be >= 0, got {value!r}")
        if self.power_free and self.price_per_kwh is None:
            raise ValueError(f"{self.event_id}: needs a power instruction or a price")

    @property
    def power_free(self) -> bool:
        """True when the instruction asks for no power (a price-only event)."""
        return (
            self.import_cap_w is None
            and self.export_floor_w is None
            and (self.turn_up_floor_w is None)
        )

    @property
    def kind(self) -> InstructionKind:
        """The leading instruction: a cap before a floor before a turn-up, else a price."""
        if self.import_cap_w is not None:
            return "import-cap"
        if self.export_floor_w is not None:
            return "export-floor"
        if self.turn_up_floor_w is not None:
            return "turn-up"
        return "price"

    @property
    def live_limit_w(self) -> float | None:
        """What the live loop holds: the import cap, else the export floor [W]."""
        return self.import_cap_w if self.import_cap_w is not None else self.export_floor_w

    def active(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def with_baseline(self, baseline_w: float) -> FlexInstruction:
        return replace(self, baseline_w=baseline_w)


def live_candidate(
    instructions: Sequence[FlexInstruction], now: datetime
) -> FlexInstruction | None:
    """The instruction the live loop should follow: the first to start of those not yet
    ended that cap import or hold an export floor (a turn-up is left to the plan)."""
    upcoming = sorted((i for i in instructions if i.end > now), key=lambda i: i.start)
    return next((i for i in upcoming if i.kind in LIVE_KINDS), None)
