"""What /api/v1/health (and /api/health) answers: 200 `{"ok": true}`, or 503 with reasons.

The endpoint is public (monitoring probes carry no login), so a reason is a fixed code and a
detail that names only device ids or stages, never a reading, an error message or a config
value. The site's own reasons (the grid meter) come from SiteState here; the daemon adds the
stages' through a `HealthCheck` callable (hems.app.observability).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hems.core.readings import Role
from hems.core.state import SiteState


@dataclass(frozen=True, slots=True)
class HealthReason:
    """One reason the site is unhealthy. `code` is stable for alerting rules."""

    code: str
    detail: str  # device ids or a stage name only: the endpoint is public


HealthCheck = Callable[[], Sequence[HealthReason]]

GRID_METER_STALE = "grid_meter_stale"


def site_reasons(state: SiteState) -> list[HealthReason]:
    """The grid meter (every device with Role.GRID) must be fresh: control, the fuse guard
    and the export limit all act on it."""
    return [
        HealthReason(GRID_METER_STALE, device_id)
        for device_id, role in sorted(state.devices.items())
        if role is Role.GRID and state.is_stale(device_id)
    ]
