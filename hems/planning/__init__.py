"""Planning: tariffs, forecasts, the local MILP optimiser and the rolling-horizon service.

Entry class for the daemon: `PlannerService` (hems.planning.service). Standalone solving:
`optimise(Problem)` (hems.planning.optimiser); the problem format: hems.planning.problem.
"""
