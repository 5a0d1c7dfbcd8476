"""The optimiser's `Result`, in a module without numpy: the solver's child process pickles it
back to the daemon (hems.planning.solver_process), and unpickling must not import the
optimiser (numpy, highspy) there."""

from __future__ import annotations

from dataclasses import dataclass

from hems.core.plan import Plan

__all__ = ["Result"]


@dataclass(frozen=True, slots=True)
class Result:
    plan: Plan
    objective: float  # energy cost + penalties − terminal value [currency]
    solve_time_s: float
    n_cols: int
    n_rows: int
    n_integer: int
