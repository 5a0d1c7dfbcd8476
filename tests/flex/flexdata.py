"""Helpers for the flex tests (imported as `flexdata`): synthetic meter data, Europe/London."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hems.flex.meterdata import MeterData
from hems.store.rollup import settlement_periods

LONDON = ZoneInfo("Europe/London")


def build_data(
    first: date,
    last: date,
    import_fn: Callable[[date, datetime], float | None],
    export_fn: Callable[[date, datetime], float | None] | None = None,
) -> MeterData:
    """Every period of local days first..last; fn(local day, local start) -> kWh or None (gap)."""
    data = MeterData()
    day = first
    while day <= last:
        for t in settlement_periods(day, LONDON):
            local = t.astimezone(LONDON)
            v = import_fn(day, local)
            if v is not None:
                data.import_kwh[t] = v
                e = export_fn(day, local) if export_fn else 0.0
                data.export_kwh[t] = math.nan if e is None else e
        day += timedelta(days=1)
    return data


def local(day: str, hhmm: str, fold: int = 0) -> datetime:
    return datetime.combine(date.fromisoformat(day), time.fromisoformat(hhmm), LONDON).replace(
        fold=fold
    )


def to_csv(data: MeterData, tz: ZoneInfo = LONDON, with_export: bool = True) -> str:
    """The CLI's CSV form, local times with their offset."""
    lines = ["period_start,import_kwh,export_kwh" if with_export else "period_start,import_kwh"]
    for t in sorted(data.import_kwh):
        imp = data.import_kwh[t]
        cells = [t.astimezone(tz).isoformat(), "" if math.isnan(imp) else f"{imp:g}"]
        if with_export:
            exp = data.export_kwh.get(t, math.nan)
            cells.append("" if math.isnan(exp) else f"{exp:g}")
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"
