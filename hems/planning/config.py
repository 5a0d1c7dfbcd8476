"""Config of the planner (tariffs, forecasts, optimiser)."""

from __future__ import annotations

from hems.configbase import Strict


class PlannerConfig(Strict):
    enabled: bool = False
