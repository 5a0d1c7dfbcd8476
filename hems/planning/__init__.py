"""Planning: tariffs, forecasts, the local MILP optimiser and the rolling-horizon service.

Modules:

* `service`: `PlannerService`, the entry class for the daemon: when to replan, gathering
  the inputs, solving, storing and publishing plans.
* `builder`: the pure problem builder, `build_problem(ProblemInputs) -> (Problem, notes)`.
* `problem`: the `Problem` format (versioned JSON, `hems schema problem`).
* `optimiser`: `optimise(Problem)`, the HiGHS MILP (standalone: `hems optimise`).
* `store`: owner of the `plans` table (save, retention, latest plan).
* `tariffs`: prices per slot, one module per provider (fixed, TOU, Octopus products,
  ENTSO-E day-ahead, Tibber, the GB carbon weight, aggregator signals); owns
  `tariff_prices`. `tariff_config`: their config, re-exported by `config`.
* `forecast`: PV and base-load forecasts; owns `forecasts`.
* `forecast_quality`: the PV calibration per hour of day and the forecasts' accuracy (pure).
* `flex`: flexibility instructions (`hems.core.flex.FlexInstruction`, given through
  `PlannerService.set_flex_instructions`) as plan constraints (`constraint_for`), and the
  offer probes `add_cap` / `add_floor`.
* `config`: `PlannerConfig`; `planio`: plans as JSON; `chart`: a plan as SVG.

The names below load their module on first use, so `import hems.planning` stays cheap (no
HiGHS, numpy or httpx until a planner is built).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hems.planning.builder import (
        Envelope,
        EnvelopeInterval,
        EvRequest,
        ProblemInputs,
        build_problem,
    )
    from hems.planning.config import PlannerConfig
    from hems.planning.flex import add_cap, add_floor, constraint_for
    from hems.planning.optimiser import Result, optimise
    from hems.planning.problem import FlexConstraint, Problem
    from hems.planning.service import PlannerService

_HOMES = {
    "Envelope": "hems.planning.builder",
    "EnvelopeInterval": "hems.planning.builder",
    "EvRequest": "hems.planning.builder",
    "ProblemInputs": "hems.planning.builder",
    "build_problem": "hems.planning.builder",
    "PlannerConfig": "hems.planning.config",
    "optimise": "hems.planning.optimiser",
    "Problem": "hems.planning.problem",
    "PlannerService": "hems.planning.service",
    "Result": "hems.planning.optimiser",
    "FlexConstraint": "hems.planning.problem",
    "constraint_for": "hems.planning.flex",
    "add_cap": "hems.planning.flex",
    "add_floor": "hems.planning.flex",
}

__all__ = [
    "Envelope",
    "EnvelopeInterval",
    "EvRequest",
    "FlexConstraint",
    "PlannerConfig",
    "PlannerService",
    "Problem",
    "ProblemInputs",
    "Result",
    "add_cap",
    "add_floor",
    "build_problem",
    "constraint_for",
    "optimise",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hems.planning' has no attribute {name!r}")
    return getattr(import_module(home), name)
