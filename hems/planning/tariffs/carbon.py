"""The GB regional carbon-intensity forecast (National Grid ESO's Carbon Intensity API,
`/regional/intensity/{from}/fw48h/regionid/{id}`, half-hourly gCO2/kWh, no account) as an
objective weight: `import price + intensity × price_per_kg` in the prices the optimiser
weighs. Bills and the page keep the money prices. Held in memory only: after a restart the
weight returns with the first good fetch."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import structlog

from hems.core.clock import Clock
from hems.planning.tariff_config import CarbonConfig
from hems.planning.tariffs.base import Interval, price_in
from hems.planning.tariffs.fetch import (
    FAR_PAST,
    FetchError,
    FetchSchedule,
    ReplyError,
    json_of,
    parse_utc,
    request,
)

log = structlog.get_logger(__name__)

MAX_G_PER_KWH = 2000.0  # coal is ~900-1000 g/kWh; above this the unit is wrong
MIN_HALF_HOURS = 48  # fw48h gives 96; fewer than a day's worth is a short reply


def parse_carbon_intensity(payload: Any, region_id: int, provider: str) -> list[Interval]:
    """A `regionid` forecast → intervals whose value is the intensity in kgCO2/kWh."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if isinstance(data, list) and len(data) == 1:  # the postcode/region forms wrap it
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ReplyError(provider, "data.data", "missing or not a list")
    if data.get("regionid") != region_id:
        raise ReplyError(provider, "data.regionid", f"{data.get('regionid')!r}, not {region_id}")
    out: list[Interval] = []
    for i, row in enumerate(data["data"]):
        field = f"data.data[{i}]"
        if not isinstance(row, dict):
            raise ReplyError(provider, field, "not an object")
        start = parse_utc(provider, f"{field}.from", row.get("from"))
        end = parse_utc(provider, f"{field}.to", row.get("to"))
        if end - start != timedelta(minutes=30):
            raise ReplyError(provider, f"{field}.to", "not 30 min after from")
        intensity = row.get("intensity")
        value = intensity.get("forecast") if isinstance(intensity, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReplyError(provider, f"{field}.intensity.forecast", f"not a number: {value!r}")
        if not 0 <= value <= MAX_G_PER_KWH:
            raise ReplyError(
                provider, f"{field}.intensity.forecast", f"{value} is not gCO2/kWh (wrong units?)"
            )
        out.append(Interval(start, end, value / 1000.0))
    if len(out) < MIN_HALF_HOURS:
        raise ReplyError(
            provider, "data.data", f"only {len(out)} half-hours, expected 96 (a short reply)"
        )
    return out


class CarbonWeight:
    def __init__(
        self,
        cfg: CarbonConfig,
        currency: str,
        http: httpx.AsyncClient,
        clock: Clock,
        zone: ZoneInfo,
    ) -> None:
        self.cfg, self.currency, self.http, self.clock = cfg, currency, http, clock
        self.provider = f"carbonintensity region {cfg.region_id}"
        self.schedule = FetchSchedule(cfg, zone)
        self.intensity: list[Interval] = []  # kgCO2/kWh
        self.failed: str | None = None
        self.due = FAR_PAST

    async def refresh(self, *, force: bool = True) -> bool:
        now = self.clock.now()
        if not force and now < self.due:
            return False
        start = now.replace(minute=now.minute - now.minute % 30, second=0, microsecond=0)
        url = (
            f"{self.cfg.base_url.rstrip('/')}/regional/intensity/"
            f"{start:%Y-%m-%dT%H:%MZ}/fw48h/regionid/{self.cfg.region_id}"
        )
        changed = False
        try:
            r = await request(self.http, self.clock, self.cfg, self.provider, url)
            fresh = parse_carbon_intensity(
                json_of(self.provider, r), self.cfg.region_id, self.provider
            )
        except FetchError as exc:
            if self.failed != exc.reason:
                log.warning(
                    "carbon fetch failed, keeping the last good forecast",
                    provider=self.provider,
                    reason=exc.reason,
                )
            self.failed = exc.reason
        else:
            if self.failed is not None:
                log.info("carbon fetch recovered", provider=self.provider)
            self.failed = None
            changed = fresh != self.intensity
            self.intensity = fresh
        self.due = self.schedule.next_after(now, failed=self.failed is not None)
        return changed

    def weights_per_kwh(
        self, start: datetime, n: int, step_min: int
    ) -> tuple[list[float], tuple[str, ...]]:
        """The carbon cost per slot [currency/kWh] and the notes saying it is there."""
        price = self.cfg.price_per_kg
        step = timedelta(minutes=step_min)
        known = [iv.price_per_kwh for iv in self.intensity]
        notes: list[str] = []
        if self.failed is not None:
            notes.append(f"carbon: {self.provider} fetch failed ({self.failed}); last good kept")
        if not known:
            notes.append(f"carbon: no intensity forecast from {self.provider}; no carbon weight")
            return [0.0] * n, tuple(notes)
        mean = statistics.fmean(known)
        values: list[float] = []
        missing = 0
        for i in range(n):
            v = price_in(self.intensity, start + i * step, start + (i + 1) * step)
            if v is None:
                missing += 1
                v = mean
            values.append(v * price)
        notes.insert(
            0,
            f"carbon: import price includes {price:g} {self.currency}/kgCO2 × the forecast "
            f"intensity of GB region {self.cfg.region_id} (optimised, not billed)",
        )
        if missing:
            notes.append(f"carbon: {missing} slots beyond the forecast use its mean intensity")
        return values, tuple(notes)
