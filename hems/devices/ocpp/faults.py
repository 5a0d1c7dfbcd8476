"""When hems shows a charger faulted, and when that is over.

A fault comes from the charger (status Faulted/Unavailable on connector 0), from calls it
leaves unanswered (`TIMEOUTS_TO_FAULT` in a row) or from the server (a reconnect loop). The
reason text says which, so each source clears only its own fault.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

# Consecutive unanswered CALLs before the charger is shown faulted.
TIMEOUTS_TO_FAULT = 2
NOT_ANSWERED = "not answered"  # in the reason of an unanswered-calls fault
STATUS_FAULT = "charger status"  # the reason's prefix when the charger reports the fault


class Faults:
    """The fault state of one charger. `on_fault(reason)` runs after a fault is set."""

    def __init__(
        self, device_id: str, response_timeout_s: float, on_fault: Callable[[str], None]
    ) -> None:
        self._device_id = device_id
        self._response_timeout_s = response_timeout_s
        self._on_fault = on_fault
        self.reason: str | None = None
        self._timeouts = 0

    def set(self, reason: str) -> None:
        self.reason = reason
        log.error("ocpp charger faulted", charger=self._device_id, reason=reason)
        self._on_fault(reason)

    def clear(self) -> None:
        if self.reason is not None:
            log.info("ocpp charger recovered", charger=self._device_id, was=self.reason)
            self.reason = None

    def new_connection(self) -> None:
        self._timeouts = 0

    def call_timed_out(self, what: str) -> None:
        self._timeouts += 1
        log.error(
            "ocpp call not answered",
            charger=self._device_id,
            call=what,
            timeout_s=self._response_timeout_s,
            in_a_row=self._timeouts,
        )
        if self._timeouts >= TIMEOUTS_TO_FAULT and self.reason is None:
            self.set(f"{self._timeouts} calls in a row {NOT_ANSWERED}")

    def call_answered(self) -> None:
        """A CALL was answered: a fault for unanswered calls is over."""
        self._timeouts = 0
        if self.reason and NOT_ANSWERED in self.reason:
            self.clear()

    def charger_status(self, status: str, error_code: str | None) -> None:
        """The charger as a whole (connector 0) reported `status`."""
        if status in ("Faulted", "Unavailable"):
            self.set(f"{STATUS_FAULT} {status} ({error_code or 'no code'})")
        elif self.reason and self.reason.startswith(STATUS_FAULT):
            self.clear()
