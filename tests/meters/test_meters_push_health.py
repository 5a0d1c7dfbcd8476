"""PushHealth: the shared link/input bookkeeping of the P1 and Glow adapters."""

from __future__ import annotations

from datetime import UTC, datetime

from structlog.testing import capture_logs

from hems.core.clock import ManualClock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.devices.health import PushHealth


def test_push_health_logs_transitions_only() -> None:
    t0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
    state = SiteState(ManualClock(t0))
    state.register_device("p1", Role.GRID, stale_after_s=30)
    state.publish([Reading("p1", Quantity.POWER_W, 500.0, t0)])
    h = PushHealth("p1", state, "p1", "telegram")
    with capture_logs() as logs:
        h.input_rejected("CRC mismatch")
        h.input_rejected("CRC mismatch again")
        h.input_accepted()
        h.input_accepted()
        h.link_down("connection refused")
        h.link_down("connection refused")
        assert state.is_stale("p1")
        assert "connection refused" in (state.down_reason("p1") or "")
        h.input_accepted()
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("p1 telegram rejected", "warning"),
        ("p1 meter recovered", "info"),
        ("p1 meter down", "warning"),
        ("p1 meter recovered", "info"),
    ]
    assert (h.accepted, h.rejected, h.last_error) == (3, 2, "CRC mismatch again")
