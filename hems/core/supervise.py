"""Stage supervision: a stage that fails is logged, recorded and restarted with backoff.

Only the control loop (and the store that keeps its history) stop the daemon; any other stage
(uplink, flex, planner, OCPP, meters, …) that raises is restarted while control goes on with
what it has: inputs that stop arriving go stale, and stale inputs mean safe states.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from hems.core.clock import Clock

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class StageHealth:
    """What the page and health report about one supervised stage."""

    failures: int = 0
    last_error: str | None = None
    last_failure_at: str | None = None  # ISO 8601
    restarting_in_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "failures": self.failures,
            "last_error": self.last_error,
            "last_failure_at": self.last_failure_at,
            "restarting_in_s": self.restarting_in_s,
        }


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    clock: Clock,
    health: StageHealth,
    *,
    backoff_min_s: float = 1.0,
    backoff_max_s: float = 300.0,
    healthy_after_s: float = 600.0,
) -> None:
    """Run `run()` until cancelled; restart it after an exception with doubling backoff.

    A stage that ran `healthy_after_s` [s] before failing starts again from `backoff_min_s`.
    A stage that returns on its own is not restarted (it had nothing to do). Cancellation
    always propagates: that is shutdown.
    """
    delay_s = backoff_min_s
    while True:
        started_s = clock.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing stage must not take control down with it
            if clock.monotonic() - started_s >= healthy_after_s:
                delay_s = backoff_min_s
            health.failures += 1
            health.last_error = f"{type(exc).__name__}: {exc}"[:500]
            health.last_failure_at = clock.now().isoformat()
            health.restarting_in_s = delay_s
            log.error(
                "stage failed; restarting",
                stage=name,
                error=health.last_error,
                restart_in_s=delay_s,
                failures=health.failures,
                exc_info=exc,
            )
        await clock.sleep(delay_s)
        health.restarting_in_s = None
        delay_s = min(delay_s * 2, backoff_max_s)
