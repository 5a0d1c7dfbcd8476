"""Benchmark of the flex baselines: time to build one delivery report per preset.

Run: .venv/bin/python bench/bench_flex.py
Input: 90 days of synthetic half-hourly import/export (Europe/London), a 2 h evening event.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hems.flex.calendar import WorkingDayCalendar
from hems.flex.meterdata import MeterData, parse_csv
from hems.flex.presets import PRESETS
from hems.flex.report import report_for_event
from hems.store.rollup import settlement_periods

TZ = ZoneInfo("Europe/London")


def synthetic(first: date, days: int) -> MeterData:
    data = MeterData()
    for i in range(days):
        for t in settlement_periods(first + timedelta(days=i), TZ):
            h = t.astimezone(TZ).hour + t.astimezone(TZ).minute / 60
            data.import_kwh[t] = 0.2 + 0.3 * max(0.0, math.sin((h - 6) / 24 * 2 * math.pi))
            data.export_kwh[t] = 0.0
    return data


def main() -> None:
    first = date(2024, 11, 1)
    data = synthetic(first, 90)
    cal = WorkingDayCalendar()
    start = datetime(2025, 1, 29, 17, tzinfo=UTC)
    end = start + timedelta(hours=2)
    print(f"{'method':<18}{'reports':>8}{'ms/report':>11}")
    for name, m in PRESETS.items():
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            report_for_event(data, start, end, m, cal, TZ)
        print(f"{name:<18}{n:>8}{(time.perf_counter() - t0) / n * 1000:>11.1f}")
    lines = ["period_start,import_kwh,export_kwh"]
    for t in sorted(data.import_kwh):
        lines.append(f"{t.isoformat()},{data.import_kwh[t]:.3f},0")
    text = "\n".join(lines)
    t0 = time.perf_counter()
    parse_csv(text)
    print(f"{'parse_csv 90 d':<18}{len(lines) - 1:>8}{(time.perf_counter() - t0) * 1000:>11.1f}")


if __name__ == "__main__":
    main()
