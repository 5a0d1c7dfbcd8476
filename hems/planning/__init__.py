"""Planning: tariffs, forecasts, the local MILP optimiser and the rolling-horizon service.

Public surface:
- `PlannerService` (hems.planning.service): the daemon's entry class; flexibility enters
  through `set_flex_instructions(list[hems.core.flex.FlexInstruction])`, the aggregator's
  operating envelope through `set_envelope(Envelope)`.
- `optimise(Problem) -> Result` (hems.planning.optimiser) for standalone solving; the
  problem format, with `FlexConstraint`, is hems.planning.problem.
- hems.planning.flex: instructions as plan constraints (`constraint_for`) and the offer
  probes `add_cap` / `add_floor`.

Names load on first use, so `import hems.planning` does not load the solver (highspy).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hems.planning.flex import add_cap, add_floor, constraint_for
    from hems.planning.optimiser import Result, optimise
    from hems.planning.problem import FlexConstraint, Problem
    from hems.planning.service import Envelope, EnvelopeInterval, PlannerService

_WHERE = {
    "PlannerService": "hems.planning.service",
    "Envelope": "hems.planning.service",
    "EnvelopeInterval": "hems.planning.service",
    "optimise": "hems.planning.optimiser",
    "Result": "hems.planning.optimiser",
    "Problem": "hems.planning.problem",
    "FlexConstraint": "hems.planning.problem",
    "constraint_for": "hems.planning.flex",
    "add_cap": "hems.planning.flex",
    "add_floor": "hems.planning.flex",
}

__all__ = [
    "Envelope",
    "EnvelopeInterval",
    "FlexConstraint",
    "PlannerService",
    "Problem",
    "Result",
    "add_cap",
    "add_floor",
    "constraint_for",
    "optimise",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hems.planning' has no attribute {name!r}")
    return getattr(import_module(module), name)
