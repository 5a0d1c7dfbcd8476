"""Prometheus exposition of the live site at /metrics (prometheus-client).

A dedicated `CollectorRegistry` (never the process-global one) holds one custom collector
that reads the live objects when scraped: SiteState for the site figures (the rows of
hems.core.quantities.SITE_QUANTITIES, so the numbers equal the page's and /api/state's) and
the devices, plus the stages through `MetricsSources`, plain callables the daemon supplies
(hems.app.observability) so this module imports no stage. Nothing runs between scrapes.

A figure that is unknown or stale is left out of the scrape (missing is never zero).
/metrics sits behind the web guard like every route: a session or `Authorization: Bearer`.
prometheus-client is imported at the first scrape, not with the daemon (about 5 MiB of RSS a
gateway nobody scrapes never needs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web

from hems.core.histogram import DurationHistogram
from hems.core.quantities import SITE_QUANTITIES, SiteQuantity
from hems.core.state import SiteState

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

PATH = "/metrics"

# (time, plan status or "infeasible", solve duration [s] or None)
LastSolve = tuple[datetime, str, float | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSources:
    """What the stages expose; None where the stage is not running."""

    control_healthy: Callable[[], bool] | None = None
    cycle_histogram: Callable[[], DurationHistogram] | None = None
    interventions_started: Callable[[], Mapping[str, int]] | None = None
    ocpp_connections: Callable[[], int] | None = None
    uplink_connected: Callable[[], bool] | None = None
    outbox_depth: Callable[[], Awaitable[int]] | None = None  # a SQLite count: awaited
    planner_last_solve: Callable[[], LastSolve | None] | None = None


def metric_name(q: SiteQuantity) -> str:
    """The Prometheus name of a site figure: its key with the unit spelled out (base units
    kept as the table has them: W, %, kWh)."""
    key = q.key
    for suffix, spelled in (("_w", "_watts"), ("_pct", "_percent")):
        if key.endswith(suffix):
            return f"hems_{key.removesuffix(suffix)}{spelled}"
    return f"hems_{key}"


class SiteCollector:
    """Reads SiteState and the stages at scrape time (a prometheus-client collector: the
    registry only calls `collect`)."""

    def __init__(self, state: SiteState, sources: MetricsSources) -> None:
        self._state = state
        self._sources = sources
        self.outbox_depth: int | None = None  # set by the handler just before each scrape

    def collect(self) -> Iterable[Metric]:
        yield from self._site()
        yield from self._devices()
        yield from self._stages()

    def _site(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for q in SITE_QUANTITIES:
            value = q.value_fn(self._state)
            if value is None:
                continue
            doc = f"{q.name} [{q.unit}]" + (f" ({q.description})" if q.description else "")
            if q.state_class == "total_increasing":
                yield CounterMetricFamily(metric_name(q), doc, value=value)
            else:
                yield GaugeMetricFamily(metric_name(q), doc, value=value)

    def _devices(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "hems_device_up", "1 if the device has fresh readings, 0 if stale or down",
            labels=["device", "role"],
        )  # fmt: skip
        for device_id, role in sorted(self._state.devices.items()):
            up.add_metric([device_id, str(role)], 0.0 if self._state.is_stale(device_id) else 1.0)
        yield up

    def _stages(self) -> Iterable[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        s = self._sources
        if s.control_healthy is not None:
            yield GaugeMetricFamily(
                "hems_control_healthy",
                "1 if the last control cycle ran without error within its period",
                value=1.0 if s.control_healthy() else 0.0,
            )
        if s.cycle_histogram is not None:
            h = s.cycle_histogram()
            family = HistogramMetricFamily(
                "hems_control_cycle_seconds", "Duration of one control cycle [s]"
            )
            buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in h.cumulative()]
            family.add_metric([], buckets, h.sum_s)
            yield family
        if s.interventions_started is not None:
            counter = CounterMetricFamily(
                "hems_control_interventions",
                "Safety guard interventions started (or changed reason) since start",
                labels=["rule"],
            )
            for rule, n in sorted(s.interventions_started().items()):
                counter.add_metric([rule], n)
            yield counter
        if s.ocpp_connections is not None:
            yield GaugeMetricFamily(
                "hems_ocpp_connections", "Chargers connected over OCPP", value=s.ocpp_connections()
            )
        if s.uplink_connected is not None:
            yield GaugeMetricFamily(
                "hems_uplink_connected",
                "1 while the aggregator uplink (MQTT) is connected",
                value=1.0 if s.uplink_connected() else 0.0,
            )
        if self.outbox_depth is not None:
            yield GaugeMetricFamily(
                "hems_uplink_outbox_depth", "Messages waiting in the uplink outbox",
                value=self.outbox_depth,
            )  # fmt: skip
        if s.planner_last_solve is not None and (last := s.planner_last_solve()) is not None:
            at, status, solve_s = last
            yield GaugeMetricFamily(
                "hems_planner_last_solve_timestamp_seconds",
                "When the planner last solved (Unix time)",
                value=at.timestamp(),
            )
            if solve_s is not None:
                yield GaugeMetricFamily(
                    "hems_planner_last_solve_duration_seconds",
                    "How long the planner's last solve took [s]",
                    value=solve_s,
                )
            info = GaugeMetricFamily(
                "hems_planner_last_solve_status",
                "1 for the status of the planner's last solve (infeasible: no plan)",
                labels=["status"],
            )
            info.add_metric([status], 1.0)
            yield info


def metrics_handler(
    state: SiteState, sources: MetricsSources
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The GET /metrics handler, with its own registry (made at the first scrape)."""
    collector = SiteCollector(state, sources)
    registries: list[CollectorRegistry] = []

    async def handler(_: web.Request) -> web.StreamResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if not registries:
            registries.append(CollectorRegistry(auto_describe=False))
            registries[0].register(collector)  # type: ignore[arg-type]
        # The one awaited figure first; the rest is read synchronously with no await in
        # between, so concurrent scrapes cannot interleave inside one exposition.
        depth = await sources.outbox_depth() if sources.outbox_depth is not None else None
        collector.outbox_depth = depth
        body = generate_latest(registries[0])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler


__all__ = ["PATH", "LastSolve", "MetricsSources", "SiteCollector", "metric_name", "metrics_handler"]
