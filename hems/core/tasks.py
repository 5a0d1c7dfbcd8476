"""Cancellation that cannot be lost.

On Python 3.11, `asyncio.wait_for` returns the inner result when the inner future completes
in the same loop turn as an outer `cancel()`, swallowing the cancellation (fixed in 3.12).
pymodbus and ocpp use `wait_for` for every request, so a poller cancelled at shutdown can
miss it and poll on for ever, hanging the daemon's TaskGroup. The task still counts the
request (`Task.cancelling()`), so loops check it between iterations.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to stop and the request was lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
