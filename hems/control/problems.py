"""Log-once problem keys: a bad input or failing stage is logged when it starts and ends.

Every part of the loop reports through one `Problems` so that a condition repeating every
cycle gives one warning and one recovery line, not a line per cycle.
"""

from __future__ import annotations

import structlog

# The loop's parts log under the loop's name, so operators' filters and the log lines are
# the same whichever module a line comes from.
log = structlog.get_logger("hems.control.loop")


class Problems:
    """The set of problems logged and not yet cleared."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def first(self, key: str) -> bool:
        """Mark `key` as a problem; True only if it was not one already (log it then)."""
        if key in self._keys:
            return False
        self._keys.add(key)
        return True

    def report(self, key: str, message: str, **kw: object) -> None:
        """Warn with `message` when `key` becomes a problem; silent while it persists."""
        if self.first(key):
            log.warning(message, **kw)

    def clear(self, key: str, message: str, **kw: object) -> None:
        """Log `message` once when `key` stops being a problem."""
        if key in self._keys:
            self._keys.discard(key)
            log.info(message, **kw)
