"""Flexibility: events and their policy, offers, baselines (M&V) and delivery reports.

Public surface:
- `FlexService`: the entry class. `on_event(FlexEvent) -> Answer` decides and stores an event;
  `instructions()` / `on_change` give the accepted ones as `hems.core.flex.FlexInstruction`s
  (what the planner and the control loop consume); `live_baseline_w`, reports and offers.
- `FlexEvent` (an event as received, `from_mapping` validates a down/event payload),
  `Answer`, `EventError`, `evaluate` (the pure policy) with `Decision` / `Feasibility`,
  `EventBook` (the one store of events, `flex_events`), `supersedes` (the modification rule),
  `instruction_for`, `build_offers` with `OfferSolver`.
- Pure maths: `hems.flex.baselines` (engine) and `hems.flex.presets` (the published methods).

This package imports neither the planner nor the uplink: it meets them in hems.core types,
and hems.app translates the uplink's wire model into `FlexEvent` and `Answer` back.

The names load on first use (PEP 562): `hems.config` imports `hems.flex.config` and the daemon
`hems.flex.views` with flex off too, and importing this package used to load the service,
the reports and the meter data with them (README, Benchmarks: daemon RSS).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hems.flex.baselines import BaselineMethod, BaselineResult, compute_baseline
    from hems.flex.calendar import WorkingDayCalendar
    from hems.flex.events import (
        Answer,
        Decision,
        EventBook,
        EventError,
        Feasibility,
        FlexEvent,
        OfferSolver,
        build_offers,
        evaluate,
        instruction_for,
        supersedes,
    )
    from hems.flex.meterdata import MeterData, MeterDataError, parse_csv
    from hems.flex.presets import PRESETS, method
    from hems.flex.report import DeliveryReport, build_report, report_for_event
    from hems.flex.service import FlexService

_HOMES = {
    "Answer": "hems.flex.events",
    "BaselineMethod": "hems.flex.baselines",
    "BaselineResult": "hems.flex.baselines",
    "Decision": "hems.flex.events",
    "DeliveryReport": "hems.flex.report",
    "EventBook": "hems.flex.events",
    "EventError": "hems.flex.events",
    "Feasibility": "hems.flex.events",
    "FlexEvent": "hems.flex.events",
    "FlexService": "hems.flex.service",
    "MeterData": "hems.flex.meterdata",
    "MeterDataError": "hems.flex.meterdata",
    "OfferSolver": "hems.flex.events",
    "PRESETS": "hems.flex.presets",
    "WorkingDayCalendar": "hems.flex.calendar",
    "build_offers": "hems.flex.events",
    "build_report": "hems.flex.report",
    "compute_baseline": "hems.flex.baselines",
    "evaluate": "hems.flex.events",
    "instruction_for": "hems.flex.events",
    "method": "hems.flex.presets",
    "parse_csv": "hems.flex.meterdata",
    "report_for_event": "hems.flex.report",
    "supersedes": "hems.flex.events",
}
__all__ = [
    "PRESETS",
    "Answer",
    "BaselineMethod",
    "BaselineResult",
    "Decision",
    "DeliveryReport",
    "EventBook",
    "EventError",
    "Feasibility",
    "FlexEvent",
    "FlexService",
    "MeterData",
    "MeterDataError",
    "OfferSolver",
    "WorkingDayCalendar",
    "build_offers",
    "build_report",
    "compute_baseline",
    "evaluate",
    "instruction_for",
    "method",
    "parse_csv",
    "report_for_event",
    "supersedes",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hems.flex' has no attribute {name!r}")
    return getattr(import_module(home), name)
