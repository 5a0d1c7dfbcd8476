"""Flexibility instructions in the planner's terms: constraints, price signals, offer probes.

`constraint_for` is how an accepted `FlexInstruction` enters every plan; `add_cap` /
`add_floor` are the probes hems.flex.build_offers re-solves a `Problem` with.
"""

from __future__ import annotations

import math
from datetime import datetime

from hems.core.flex import FlexInstruction
from hems.planning.problem import FlexConstraint, Problem

PRICE_STEP_MIN = 30  # a price event's signal is laid out in settlement periods


def constraint_for(instruction: FlexInstruction) -> FlexConstraint | None:
    """The plan constraint of an instruction, None for a price-only one. The import cap and
    export floor are hard, the turn-up floor is soft (see FlexConstraint)."""
    if instruction.power_free:
        return None
    return FlexConstraint(
        id=instruction.event_id,
        start=instruction.start,
        end=instruction.end,
        import_cap_w=instruction.import_cap_w,
        export_floor_w=instruction.export_floor_w,
        import_floor_w=instruction.turn_up_floor_w,
    )


def price_slots(instruction: FlexInstruction) -> list[float]:
    """A price-only instruction as one import price per PRICE_STEP_MIN slot from its start."""
    assert instruction.price_per_kwh is not None
    window_s = (instruction.end - instruction.start).total_seconds()
    slots = max(1, math.ceil(window_s / (PRICE_STEP_MIN * 60)))
    return [float(instruction.price_per_kwh)] * slots


def add_cap(problem: Problem, start: datetime, end: datetime, cap_w: float) -> Problem:
    """`problem` with an import cap for [start, end) (a turn-down offer probe)."""
    event = FlexConstraint(id="offer", start=start, end=end, import_cap_w=max(0.0, cap_w))
    return problem.model_copy(update={"events": [*problem.events, event]})


def add_floor(problem: Problem, start: datetime, end: datetime, floor_w: float) -> Problem:
    """`problem` with a HARD net-import floor for [start, end): infeasible = the home cannot
    turn up that much (a turn-up offer probe)."""
    event = FlexConstraint(
        id="offer-up",
        start=start,
        end=end,
        import_floor_w=floor_w,
        import_floor_penalty_per_kwh=None,
    )
    version = max(problem.version, 2)  # the floor needs v2; a v3 problem stays v3
    return problem.model_copy(update={"events": [*problem.events, event], "version": version})
