"""Flexibility: events and their policy, offers, baselines (M&V) and delivery reports.

Entry class: `FlexService`. Pure maths: `hems.flex.baselines` (engine) and
`hems.flex.presets` (the published methods).
"""

from hems.flex.baselines import BaselineMethod, BaselineResult, compute_baseline
from hems.flex.calendar import WorkingDayCalendar
from hems.flex.events import EventBook, Feasibility, FlexEvent, build_offers, evaluate
from hems.flex.meterdata import MeterData, MeterDataError, parse_csv
from hems.flex.presets import PRESETS, method
from hems.flex.report import DeliveryReport, build_report, report_for_event
from hems.flex.service import FlexService

__all__ = [
    "PRESETS",
    "BaselineMethod",
    "BaselineResult",
    "DeliveryReport",
    "EventBook",
    "Feasibility",
    "FlexEvent",
    "FlexService",
    "MeterData",
    "MeterDataError",
    "WorkingDayCalendar",
    "build_offers",
    "build_report",
    "compute_baseline",
    "evaluate",
    "method",
    "parse_csv",
    "report_for_event",
]
