"""Health reasons and /metrics sources from the daemon's stages, for hems.web.health and
hems.web.metrics (which import no stage): the daemon calls `publish(web, daemon)` once."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import structlog

from hems.core.readings import Quantity, Role
from hems.web.health import HealthReason
from hems.web.metrics import PATH, MetricsSources, metrics_handler
from hems.web.server import WebServer

if TYPE_CHECKING:
    from hems.app.daemon import Daemon

log = structlog.get_logger(__name__)

CONTROL_UNHEALTHY = "control_unhealthy"
NO_GRID_METER = "no_grid_meter"
EXPORT_LIMIT_UNENFORCEABLE = "export_limit_unenforceable"
EXPORT_LIMIT_BATTERY_ONLY = "export_limit_battery_only"
FUSE_PHASES_UNMEASURED = "fuse_phases_unmeasured"
# What the control loop's snapshot reads per phase: powers, or else currents (all three).
_PER_PHASE = (
    (Quantity.POWER_L1_W, Quantity.POWER_L2_W, Quantity.POWER_L3_W),
    (Quantity.CURRENT_L1_A, Quantity.CURRENT_L2_A, Quantity.CURRENT_L3_A),
)


def health_reasons(daemon: Daemon) -> list[HealthReason]:
    """What keeps the site from being controlled safely, as far as the code can tell.

    Only with the control loop running: a monitoring-only site (control disabled) enforces
    nothing by design. The export limit needs every PV source that can exceed it curtailed:
    PV the loop cannot curtail (no curtailment controls, or not under control) whose ratings
    add up to more than the limit (or are not stated) makes it unenforceable without a
    controlled battery, and rest on the battery alone with one (until the battery is full).
    A 3-phase site whose grid meter gives no per-phase currents has its fuse guarded on a
    worst-case split (hems.control.guard), which the owner should know about.
    """
    control = daemon.control
    if control is None:
        return []
    reasons: list[HealthReason] = []
    if not control.healthy:
        reasons.append(HealthReason(CONTROL_UNHEALTHY, "control"))
    roles = daemon.state.devices
    grids = sorted(d for d, r in roles.items() if r is Role.GRID)
    if not grids:
        reasons.append(HealthReason(NO_GRID_METER, "control"))
    export = export_reason(daemon)
    if export is not None:
        reasons.append(export)
    if daemon.cfg.limits.phases == 3:
        state = daemon.state
        blind = [
            d
            for d in grids
            if not state.is_stale(d)
            and not any(all(state.fresh_value(d, q) is not None for q in qs) for qs in _PER_PHASE)
        ]
        if blind:
            reasons.append(HealthReason(FUSE_PHASES_UNMEASURED, ",".join(blind)))
    return reasons


def export_reason(daemon: Daemon) -> HealthReason | None:
    """Why the export limit cannot be guaranteed with the devices configured, or None."""
    control = daemon.control
    limit_w = daemon.cfg.limits.export_limit_w
    if control is None or not math.isfinite(limit_w):
        return None
    roles = daemon.state.devices
    ratings = daemon.cfg.device_ratings()
    uncurtailed = sorted(d for d, r in roles.items() if r is Role.PV and not control.controls(d))
    if not uncurtailed:
        return None
    rated = [ratings[d].rated_w if d in ratings else None for d in uncurtailed]
    if all(w is not None for w in rated) and sum(w or 0.0 for w in rated) <= limit_w:
        return None  # even at full power these cannot pass the limit
    if any(r is Role.BATTERY and control.controls(d) for d, r in roles.items()):
        return HealthReason(EXPORT_LIMIT_BATTERY_ONLY, ",".join(uncurtailed))
    return HealthReason(EXPORT_LIMIT_UNENFORCEABLE, ",".join(uncurtailed))


def log_guarantees(daemon: Daemon) -> None:
    """At start, say in the log what the devices configured cannot guarantee (the per-phase
    notice needs readings: the control loop logs it at its first cycle without them)."""
    reason = export_reason(daemon)
    if reason is not None:
        log.warning(
            "export limit not guaranteed by the devices configured",
            code=reason.code,
            pv=reason.detail,
            export_limit_w=daemon.cfg.limits.export_limit_w,
        )


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
