"""Run the MILP solve in a child interpreter, so numpy and highspy never load in the daemon.

Measured (bench/bench_daemon.py --full): importing `hems.planning.optimiser` (numpy,
highspy) and its solves cost the daemon about 20 MiB of RSS it never gives back. The planner
calls `optimise_in_child`, which hands the problem to one child
(`python -m hems.planning.solver_process`) over a pipe: length-prefixed pickles, the child's
own stdout kept free for what HiGHS may print. The child imports only the optimiser, starts at
a solve and ends `IDLE_CLOSE_S` after the last one, or when the daemon closes its stdin (at
exit, or when the daemon dies and the pipe breaks).

`optimise`'s contract is kept: the same arguments (the time limit is HiGHS' own, in the
child), the same `Result`, `Infeasible(field, reason)` and `PlanningError`s re-raised as
themselves. A child that dies mid-solve is a `PlanningError` (the next solve starts a new
one); any other exception in the child comes back as `SolverProcessError` with its traceback.
Blocking, like `optimise`: the planner runs it in a thread.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
import threading
import traceback
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hems import errors
from hems.errors import Infeasible, PlanningError

if TYPE_CHECKING:
    from hems.core.plan import Plan
    from hems.planning.problem import Problem
    from hems.planning.result import Result

__all__ = ["SolverProcessError", "close", "optimise_in_child"]

_HEADER = struct.Struct(">I")  # payload length [bytes]


class SolverProcessError(RuntimeError):
    """An unexpected exception in the child (a bug, not a planning outcome)."""


def _write(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("solver pipe closed")
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("solver pipe closed mid-message")
    return pickle.loads(data)  # our own child, over our own pipe


# The child ends this long after its last solve. Replans come in bursts (a car plugged in,
# a battery first read, an event) and otherwise once a slot, so the ~60 MiB it holds is
# given back between slots for about 0.35 s CPU here (more on a Pi) to start it again.
IDLE_CLOSE_S = 60.0
# A solve that has not answered this long after its own time limit is killed (HiGHS ignoring
# its limit, a child stopped or swapped out), so the planner reports it instead of hanging.
OVERRUN_GRACE_S = 60.0


class _Child:
    """One child process and the lock that keeps one request on the pipe at a time."""

    def __init__(
        self, idle_close_s: float = IDLE_CLOSE_S, overrun_grace_s: float = OVERRUN_GRACE_S
    ) -> None:
        self._overrun_grace_s = overrun_grace_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._idle_close_s = idle_close_s
        self._idle: threading.Timer | None = None
        self._calls = 0  # the idle timer closes only if no call came after it was set

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def _start(self) -> subprocess.Popen[bytes]:
        root = str(Path(__file__).resolve().parents[2])  # the directory holding `hems`
        path = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=root if not path else root + os.pathsep + path)
        return subprocess.Popen(
            [sys.executable, "-m", "hems.planning.solver_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def call(self, request: tuple[Any, ...]) -> Any:
        with self._lock:
            self._calls += 1
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            time_limit_s = float(request[1])  # (problem, time_limit_s, ...)
            overrun = threading.Timer(time_limit_s + self._overrun_grace_s, proc.kill)
            overrun.daemon = True
            overrun.start()
            try:
                _write(proc.stdin, request)
                return _read(proc.stdout)
            except (EOFError, OSError) as exc:
                self._stop()
                if overrun.finished.is_set():
                    raise PlanningError(
                        f"solver process did not answer within {time_limit_s:g} s + "
                        f"{self._overrun_grace_s:g} s; killed"
                    ) from exc
                raise PlanningError(f"solver process failed: {exc}") from exc
            finally:
                overrun.cancel()
                self._arm_idle(self._calls)

    def _arm_idle(self, calls: int) -> None:
        timer = threading.Timer(self._idle_close_s, self._close_if_idle, args=(calls,))
        timer.daemon = True
        self._idle = timer
        timer.start()

    def _close_if_idle(self, calls: int) -> None:
        with self._lock:
            if self._calls == calls:  # no solve since this timer was set
                self._idle = None
                self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=5.0)  # EOF on stdin: the child's loop ends
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            self._stop()


_CHILD = _Child()
atexit.register(_CHILD.close)


def close() -> None:
    """End the child now (it restarts at the next solve)."""
    _CHILD.close()


def optimise_in_child(
    problem: Problem,
    *,
    time_limit_s: float = 5.0,
    mip_rel_gap: float = 0.001,
    created_at: datetime | None = None,
    warm_start: Plan | None = None,
) -> Result:
    """`hems.planning.optimiser.optimise`, solved in the child process. Blocking."""
    reply = _CHILD.call((problem, time_limit_s, mip_rel_gap, created_at, warm_start))
    kind = reply[0]
    if kind == "ok":
        result: Result = reply[1]
        return result
    if kind == "infeasible":
        raise Infeasible(reply[1], reply[2])
    if kind == "planning":
        cls = getattr(errors, reply[1], PlanningError)
        if not (isinstance(cls, type) and issubclass(cls, PlanningError)):
            cls = PlanningError
        raise cls(reply[2])
    raise SolverProcessError(reply[1])


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The child's loop: one reply per request until the daemon closes the pipe."""
    from hems.planning.optimiser import optimise  # numpy, highspy: here only

    while True:
        try:
            problem, time_limit_s, mip_rel_gap, created_at, warm_start = _read(inp)
        except EOFError:
            return
        reply: tuple[Any, ...]
        try:
            result = optimise(
                problem,
                time_limit_s=time_limit_s,
                mip_rel_gap=mip_rel_gap,
                created_at=created_at,
                warm_start=warm_start,
            )
            reply = ("ok", result)
        except Infeasible as exc:
            reply = ("infeasible", exc.field, exc.reason)
        except PlanningError as exc:
            reply = ("planning", type(exc).__name__, str(exc))
        except Exception:  # a bug: sent to the daemon, raised there
            reply = ("bug", traceback.format_exc())
        _write(out, reply)


def main() -> None:
    # The protocol gets the real stdout; fd 1 becomes stderr, so nothing printed (HiGHS'
    # banner, a stray print) can corrupt a reply.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
