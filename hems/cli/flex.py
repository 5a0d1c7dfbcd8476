"""`hems baseline`: compute a delivery report offline from a meter CSV, for auditors."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from hems.flex.calendar import LEGACY_REGIONS, WorkingDayCalendar
from hems.flex.config import CalendarConfig
from hems.flex.meterdata import MeterDataError, parse_csv
from hems.flex.presets import PRESETS, method
from hems.flex.report import DeliveryReport, report_for_event


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `hems baseline`."""
    p = sub.add_parser(
        "baseline",
        help="compute a flexibility baseline and delivery report from a meter CSV",
        description="CSV columns: period_start,import_kwh[,export_kwh] (ISO 8601 with offset, "
        "30-min periods; an empty cell is missing data).",
    )
    p.add_argument("--method", required=True, choices=sorted(PRESETS))
    p.add_argument("--data", required=True, type=Path, metavar="FILE.csv")
    p.add_argument("--event", required=True, metavar="START/END", help="ISO 8601 with offset")
    p.add_argument("--json", action="store_true", help="print the report payload as JSON")
    p.add_argument("--timezone", default="Europe/London", help="site time zone")
    p.add_argument("--country", default="GB", help="holidays of this country (ISO 3166-1)")
    p.add_argument(
        "--subdivision", help="part of the country (GB: ENG, WLS, SCT, NIR); default ENG for GB"
    )
    p.add_argument(
        "--holiday-set", default="auto", choices=("auto", "public", "nerc"),
        help="auto: NERC holidays for --country US with a PJM/CAISO method, else public",
    )  # fmt: skip
    p.add_argument(
        "--region", choices=sorted(LEGACY_REGIONS), help="older name for --country/--subdivision"
    )
    p.add_argument("--quantity", default="import", choices=("import", "export", "net_import"))
    p.add_argument("--direction", default="turn_down", choices=("turn_down", "turn_up"))
    adj = p.add_mutually_exclusive_group()
    adj.add_argument(
        "--no-adjustment", action="store_true", help="switch the in-day adjustment off"
    )
    adj.add_argument("--adjustment", action="store_true", help="switch the in-day adjustment on")
    p.add_argument("--settlement", choices=("positive_only", "net"))
    p.add_argument(
        "--event-day", action="append", default=[], metavar="YYYY-MM-DD",
        help="an earlier event day to leave out (repeatable)",
    )  # fmt: skip
    p.set_defaults(func=run_baseline)


def _fail(message: str) -> int:
    print(f"hems baseline: {message}", file=sys.stderr)
    return 2


def _parse_event(text: str) -> tuple[datetime, datetime]:
    parts = text.split("/")
    if len(parts) != 2:
        raise ValueError(f"--event: expected START/END, got {text!r}")
    out = []
    for name, raw in zip(("start", "end"), parts, strict=True):
        try:
            t = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise ValueError(f"--event: {name} is not an ISO 8601 time: {raw!r}") from None
        if t.tzinfo is None:
            raise ValueError(f"--event: {name} needs a UTC offset: {raw!r}")
        out.append(t)
    return out[0], out[1]


def _calendar(args: argparse.Namespace) -> WorkingDayCalendar:
    """The calendar from the options, checked as the config's `flex.calendar` is."""
    if args.region is not None:
        fields: dict[str, object] = {"region": args.region}
    else:
        subdivision = args.subdivision
        if subdivision is None and args.country.upper() == "GB":
            subdivision = "ENG"
        fields = {"country": args.country, "subdivision": subdivision}
    try:
        cfg = CalendarConfig.model_validate({**fields, "holiday_set": args.holiday_set})
        return WorkingDayCalendar(
            cfg.country, cfg.subdivision, holiday_set=cfg.resolved_set(args.method)
        )
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
    except ValueError as exc:
        message = str(exc)
    field, _, problem = message.partition(": ")  # "country: unknown 'XX' ..." -> --country
    raise ValueError(f"--{field.replace('_', '-')}: {problem}")


def run_baseline(args: argparse.Namespace) -> int:
    try:
        tz = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return _fail(f"--timezone: unknown time zone {args.timezone!r}")
    try:
        start, end = _parse_event(args.event)
        event_days = frozenset(date.fromisoformat(d) for d in args.event_day)
    except ValueError as exc:
        return _fail(str(exc) if "--event" in str(exc) else f"--event-day: {exc}")
    try:
        calendar = _calendar(args)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        text = args.data.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"--data: cannot read {args.data}: {exc}")
    try:
        data = parse_csv(text, source=str(args.data))
        m = method(
            args.method,
            adjustment=False if args.no_adjustment else (True if args.adjustment else None),
            settlement=args.settlement,
        )
        report = report_for_event(
            data, start, end, m, calendar, tz,
            quantity=args.quantity, direction=args.direction, event_days=event_days,
        )  # fmt: skip
    except MeterDataError as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(report.payload(), indent=2, sort_keys=True))
    else:
        print(format_table(report))
    return 0 if report.problem is None else 1


def _f(v: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.3f}"


def format_table(r: DeliveryReport) -> str:
    """A readable table of the report for the terminal."""
    lines = [
        f"method   {r.method} ({r.method_version}), adjustment {r.method_details.adjustment}, "
        f"settlement {r.method_details.settlement}",
        f"event    {r.window_start} / {r.window_end}  ({r.day_type} day, {r.timezone}, "
        f"{r.quantity}, {r.direction})",
        f"days     used {len(r.days_used)}: {', '.join(r.days_used) or '-'}",
    ]
    for ex in r.exclusions:
        lines.append(f"         excluded {ex.day}: {ex.reason}")
    if r.problem:
        lines.append(f"PROBLEM  {r.problem}")
    lines.append("")
    lines.append(
        f"{'period_start':<21}{'unadj_kWh':>10}{'adj_kWh':>10}{'base_kWh':>10}"
        f"{'meter_kWh':>10}{'deliv_kWh':>10}"
    )
    for p in r.periods:
        lines.append(
            f"{p.period_start:<21}{_f(p.unadjusted_baseline_kwh)}{_f(p.adjustment_kwh)}"
            f"{_f(p.baseline_kwh)}{_f(p.metered_kwh)}{_f(p.delivered_kwh)}"
        )
    lines.append(f"{'total delivered':<61}{_f(r.total_delivered_kwh)}")
    s = r.shadow
    flag = "SUSPECTED" if s.load_shifting_suspected else "not suspected"
    ratio = "-" if s.ratio is None else f"{s.ratio:.2f}"
    lines.append(
        f"shadow   window {s.window_start}..{s.window_end}: metered/baseline {ratio} "
        f"(threshold {1 + s.threshold_fraction:.2f}) -> pre-event load shifting {flag}"
    )
    lines.append(f"meter    sha256 {r.meter_data_sha256} over {r.meter_data.periods} periods")
    return "\n".join(lines)
