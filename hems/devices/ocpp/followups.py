"""Calls a charger makes after a handler has answered (configure, re-assert the limit, …).

A handler must never await a CALL itself (the receive loop would wait for its own answer),
so it queues a follow-up; a worker task owned by the connection runs them in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from ocpp.exceptions import OCPPError

from hems.errors import DeviceRejected, DeviceTimeout, DeviceUnreachable

log = structlog.get_logger(__name__)

Followup = Callable[[], Awaitable[object]]


async def cancel_until_done(task: asyncio.Task[object]) -> None:
    # Python 3.11's asyncio.wait_for (used by ocpp's `call`) can swallow a cancellation
    # that races with an answer; cancel until the task has really ended.
    for _ in range(50):
        if task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)


class Followups:
    """The follow-up queue of the current connection.

    `on_timeout(what)` is told about an unanswered follow-up call (it counts towards the
    charger's fault); other refusals are only logged.
    """

    def __init__(self, device_id: str, on_timeout: Callable[[str], None]) -> None:
        self._device_id = device_id
        self._on_timeout = on_timeout
        self._queue: asyncio.Queue[Followup] = asyncio.Queue()

    def renew(self) -> asyncio.Queue[Followup]:
        """A fresh queue for a new connection: an older connection's worker can never take
        its jobs. Pass it to `work`."""
        self._queue = asyncio.Queue()
        return self._queue

    async def work(self, queue: asyncio.Queue[Followup]) -> None:
        """Run `queue`'s jobs until cancelled."""
        while True:
            job = await queue.get()
            try:
                await job()
            except TimeoutError:
                self._on_timeout("follow-up")
            except (OCPPError, DeviceRejected, DeviceUnreachable, DeviceTimeout) as exc:
                log.warning("ocpp follow-up failed", charger=self._device_id, error=str(exc))
            finally:
                queue.task_done()

    def put(self, job: Followup) -> None:
        self._queue.put_nowait(job)

    def idle(self) -> bool:
        """No job queued or running on the current connection."""
        return self._queue._unfinished_tasks == 0  # type: ignore[attr-defined]
