"""The solve in a child process: same results and errors as in-process, no numpy in the parent."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from hems.errors import Infeasible
from hems.planning import solver_process
from hems.planning.optimiser import optimise
from hems.planning.problem import BatterySpec, DeferrableLoad, EvSession, Problem
from hems.planning.solver_process import optimise_in_child

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)


def problem() -> Problem:
    return Problem(
        start=T0,
        step_min=30,
        import_price_per_kwh=[0.3, 0.1, 0.3, 0.5],
        export_price_per_kwh=[0.0] * 4,
        load_w=1000,
        batteries=[
            BatterySpec(id="bat", capacity_wh=2000, initial_soc_pct=0, max_charge_w=4000,
                        max_discharge_w=4000, charge_efficiency=1.0, discharge_efficiency=1.0,
                        terminal_value_per_kwh=0.0)
        ],
        evs=[EvSession(id="wb", arrival=T0, departure=T0 + timedelta(hours=2), energy_wh=3000,
                       max_power_w=7400)],
    )  # fmt: skip


def test_the_child_gives_the_in_process_result() -> None:
    here = optimise(problem(), created_at=T0)
    there = optimise_in_child(problem(), created_at=T0)
    assert there.plan == here.plan
    assert there.objective == pytest.approx(here.objective)
    assert (there.n_cols, there.n_rows, there.n_integer) == (
        here.n_cols,
        here.n_rows,
        here.n_integer,
    )
    # The previous plan as warm start goes over the pipe too.
    assert optimise_in_child(problem(), created_at=T0, warm_start=here.plan).plan == here.plan


def test_infeasible_comes_back_as_itself() -> None:
    short = DeferrableLoad(id="dw", power_w=1000, run_time_min=120, window_start=T0,
                           window_end=T0 + timedelta(hours=1))  # fmt: skip
    with pytest.raises(Infeasible) as exc:
        optimise_in_child(problem().model_copy(update={"loads": [short]}))
    assert exc.value.field == "loads[0].run_time_min"
    assert "needs 120 min but the window 00:00–01:00" in exc.value.reason


def test_a_dead_child_is_replaced_at_the_next_solve() -> None:
    optimise_in_child(problem())
    proc = solver_process._CHILD._proc
    assert proc is not None
    proc.kill()
    proc.wait()
    assert optimise_in_child(problem()).plan.status == "optimal"
    assert solver_process._CHILD._proc is not proc
    solver_process.close()
    assert proc.returncode is not None


def test_the_parent_never_imports_numpy_or_highspy() -> None:
    # A fresh interpreter: this test process has numpy loaded by the other tests.
    script = textwrap.dedent(
        """
        import sys
        from datetime import UTC, datetime
        from hems.planning.problem import Problem
        from hems.planning.service import PlannerService  # noqa: F401
        from hems.planning.solver_process import optimise_in_child
        t0 = datetime(2026, 1, 5, tzinfo=UTC)
        # Export dearer than import: the model's import/export binaries (numpy-sized).
        p = Problem(start=t0, step_min=30, import_price_per_kwh=[0.085, 0.085, 0.3, 0.3],
                    export_price_per_kwh=[0.15] * 4, load_w=500, pv_w=[0.0, 1000.0, 0.0, 0.0])
        r = optimise_in_child(p)
        print(r.plan.status, "numpy" in sys.modules, "highspy" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["optimal", "False", "False"]


def test_the_child_ends_when_idle_and_starts_again_at_the_next_solve() -> None:
    child = solver_process._Child(idle_close_s=0.2)
    request = (problem(), 5.0, 0.001, T0, None)
    try:
        assert child.call(request)[0] == "ok"
        assert child.running
        proc = child._proc
        assert proc is not None
        proc.wait(timeout=30)  # the idle timer ends it: the pipe's EOF ends the child's loop
        assert not child.running
        assert child.call(request)[0] == "ok"  # a new child for the next solve
        assert child._proc is not None and child._proc is not proc
    finally:
        child.close()


def test_a_solve_within_the_idle_time_keeps_the_child() -> None:
    child = solver_process._Child(idle_close_s=3600.0)
    request = (problem(), 5.0, 0.001, T0, None)
    try:
        child.call(request)
        first = child._proc
        child.call(request)
        assert child._proc is first and child.running
    finally:
        child.close()
    assert not child.running


def test_a_child_that_does_not_answer_is_killed_and_replaced() -> None:
    """A child past its time limit and the grace (here: stopped with SIGSTOP, as a HiGHS
    ignoring its limit would look) is killed; the planner gets a PlanningError, not a hang,
    and the next solve gets a new child."""
    import os
    import signal

    from hems.errors import PlanningError

    child = solver_process._Child(idle_close_s=3600.0, overrun_grace_s=1.0)
    try:
        assert child.call((problem(), 5.0, 0.001, T0, None))[0] == "ok"
        proc = child._proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)
        with pytest.raises(PlanningError, match=r"did not answer within 0\.5 s"):
            child.call((problem(), 0.5, 0.001, T0, None))
        assert proc.poll() is not None  # killed
        assert child.call((problem(), 5.0, 0.001, T0, None))[0] == "ok"
        assert child._proc is not proc
    finally:
        child.close()
