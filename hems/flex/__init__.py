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
"""

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
