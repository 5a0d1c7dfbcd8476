"""Health reasons and /metrics sources from the daemon's stages, for hems.web.health and
hems.web.metrics (which import no stage): the daemon calls `publish(web, daemon)` once."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hems.core.readings import Role
from hems.web.health import HealthReason
from hems.web.metrics import PATH, MetricsSources, metrics_handler
from hems.web.server import WebServer

if TYPE_CHECKING:
    from hems.app.daemon import Daemon

CONTROL_UNHEALTHY = "control_unhealthy"
NO_GRID_METER = "no_grid_meter"
EXPORT_LIMIT_UNENFORCEABLE = "export_limit_unenforceable"


def health_reasons(daemon: Daemon) -> list[HealthReason]:
    """What keeps the site from being controlled safely, as far as the code can tell.

    Only with the control loop running: a monitoring-only site (control disabled) enforces
    nothing by design. The export limit counts as unenforceable only when PV exists and
    neither a PV inverter (curtailment) nor a battery (charging) is under control; a
    controlled battery alone may still fill up, which no reason here claims to know.
    """
    control = daemon.control
    if control is None:
        return []
    reasons: list[HealthReason] = []
    if not control.healthy:
        reasons.append(HealthReason(CONTROL_UNHEALTHY, "control"))
    roles = daemon.state.devices
    if Role.GRID not in roles.values():
        reasons.append(HealthReason(NO_GRID_METER, "control"))
    pv = sorted(d for d, r in roles.items() if r is Role.PV)
    absorbing = (Role.PV, Role.BATTERY)
    can_absorb = any(r in absorbing and control.controls(d) for d, r in roles.items())
    if pv and math.isfinite(daemon.cfg.limits.export_limit_w) and not can_absorb:
        reasons.append(HealthReason(EXPORT_LIMIT_UNENFORCEABLE, ",".join(pv)))
    return reasons


def metrics_sources(daemon: Daemon) -> MetricsSources:
    control, ocpp, uplink, planner = daemon.control, daemon.ocpp, daemon.uplink, daemon.planner
    return MetricsSources(
        control_healthy=(lambda: control.healthy) if control is not None else None,
        cycle_histogram=(lambda: control.cycle_histogram) if control is not None else None,
        interventions_started=control.interventions_started if control is not None else None,
        ocpp_connections=(
            (lambda: sum(c.link is not None for c in ocpp.chargers.values()))
            if ocpp is not None
            else None
        ),
        uplink_connected=uplink.connected.is_set if uplink is not None else None,
        outbox_depth=uplink.outbox.count if uplink is not None else None,
        planner_last_solve=(lambda: planner.last_solve) if planner is not None else None,
    )


def publish(web: WebServer, daemon: Daemon) -> None:
    """Health reasons for /api/v1/health and the /metrics route (behind the login guard)."""
    web.set_health(lambda: health_reasons(daemon))
    web.add_route("GET", PATH, metrics_handler(daemon.state, metrics_sources(daemon)), api=True)
