"""Octopus Energy (GB) tariffs from the public products API, no account needed:
`/v1/products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/`, paged with
`next`, `value_inc_vat` in p/kWh (→ currency/kWh), times in UTC.

How each product's rows price a slot:

* Agile (and Agile Outgoing): half-hourly rows, used as given ("dated").
* Tracker: one row per UK day, used as given; a row that is not 23–25 h long is refused.
* Go, Cosy, Flux (import and export): a few bands a day. Rows are used where given; after the
  last one, each slot takes the price of the same UK wall-clock time on the latest earlier
  day that has one (up to 7 days back), since the bands repeat daily.
* Intelligent Go: planned on fixed hours (`off_peak_start`–`off_peak_end`, UK time) at the
  lowest of the latest rows' prices, the rest at the highest; the extra off-peak slots
  Octopus dispatches to a car are not planned.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx

from hems.core.clock import Clock
from hems.core.localtime import minute_of_day
from hems.planning.tariff_config import OctopusConfig, TariffConfig
from hems.planning.tariffs.base import Interval, price_in
from hems.planning.tariffs.fetch import ReplyError, json_of, parse_utc, request
from hems.planning.tariffs.fetched import FetchedTariff, PriceSource
from hems.store.db import Database

UK = ZoneInfo("Europe/London")
Shape = Literal["dated", "daily", "banded", "fixed_hours"]
MAX_PENCE_PER_KWH = 500.0  # above this a value is not p/kWh (Agile's cap is 100 p)
MAX_PAGES = 50  # a server that pages forever must not hang the planner


def parse_octopus_rates(
    payload: Any, provider: str = "octopus", now: datetime | None = None
) -> tuple[list[Interval], str | None, int | None]:
    """One page of `standard-unit-rates` → intervals in currency/kWh, the `next` URL and
    the `count` the server claims for all pages.

    Raises ReplyError naming the bad field. A row without `valid_to` (an open-ended fixed
    price) ends 2 days after `now` (or its start, if later).
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ReplyError(provider, "results", "missing or not a list")
    out: list[Interval] = []
    for i, row in enumerate(payload["results"]):
        field = f"results[{i}]"
        if not isinstance(row, dict):
            raise ReplyError(provider, field, "not an object")
        raw = row.get("value_inc_vat")
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ReplyError(provider, f"{field}.value_inc_vat", f"not a number: {raw!r}")
        value = float(raw)
        if not math.isfinite(value) or abs(value) > MAX_PENCE_PER_KWH:
            raise ReplyError(
                provider, f"{field}.value_inc_vat", f"{raw!r} is not a p/kWh rate (wrong units?)"
            )
        start = parse_utc(provider, f"{field}.valid_from", row.get("valid_from"))
        if row.get("valid_to") is None:
            end = max(start, now or start) + timedelta(days=2)
        else:
            end = parse_utc(provider, f"{field}.valid_to", row["valid_to"])
        if end <= start:
            raise ReplyError(provider, f"{field}.valid_to", "not after valid_from")
        out.append(Interval(start, end, value / 100.0))
    nxt = payload.get("next")
    count = payload.get("count")
    return (
        out,
        nxt if isinstance(nxt, str) and nxt else None,
        count if isinstance(count, int) else None,
    )


def check_shape(provider: str, rates: list[Interval], shape: Shape) -> None:
    """Refuse rows that do not fit the product: a wrong product or region code, or units."""
    if not rates:
        raise ReplyError(provider, "results", "empty: no prices (wrong product or region?)")
    for i, r in enumerate(rates):
        hours = (r.end - r.start).total_seconds() / 3600
        if shape == "dated" and hours != 0.5:
            raise ReplyError(provider, f"results[{i}]", f"{hours:g} h long; Agile rows are 0.5 h")
        if shape == "daily" and not 23 <= hours <= 25:
            raise ReplyError(provider, f"results[{i}]", f"{hours:g} h long; Tracker rows are 1 day")


def repeat_daily_price(
    stored: list[Interval], start: datetime, end: datetime, zone: ZoneInfo = UK
) -> float | None:
    """The price over [start, end), or that of the same local wall-clock time on the
    latest of the 7 days before that has one (daily bands, daylight-saving safe)."""
    found = price_in(stored, start, end)
    if found is not None:
        return found
    a, b = start.astimezone(zone), end.astimezone(zone)
    for days in range(1, 8):
        shifted_a = (a - timedelta(days=days)).replace(tzinfo=zone)
        shifted_b = (b - timedelta(days=days)).replace(tzinfo=zone)
        found = price_in(stored, shifted_a, shifted_b)
        if found is not None:
            return found
    return None


def fixed_hours_price(
    stored: list[Interval], start: datetime, off_peak: tuple[str, str], zone: ZoneInfo = UK
) -> float | None:
    """Intelligent Go on fixed hours: the lowest of the latest day's prices inside
    `off_peak` (local HH:MM, may wrap midnight), the highest outside."""
    if not stored:
        return None
    last = max(r.end for r in stored)
    recent = [r.price_per_kwh for r in stored if r.end > last - timedelta(days=1)]
    local = start.astimezone(zone)
    minute = local.hour * 60 + local.minute
    s, e = minute_of_day(off_peak[0]), minute_of_day(off_peak[1])
    inside = (s <= minute < e) if s < e else (minute >= s or minute < e)
    return min(recent) if inside else max(recent)


class OctopusRates(PriceSource):
    def __init__(
        self, cfg: OctopusConfig, product: str, tariff: str, direction: str, shape: Shape
    ) -> None:
        self.cfg = cfg
        self.product, self.tariff, self.direction, self.shape = product, tariff, direction, shape
        self.provider = f"octopus {product}"
        self.cache_key = tariff  # the Agile-only cache used the bare tariff code

    async def fetch(self, http: httpx.AsyncClient, clock: Clock, now: datetime) -> list[Interval]:
        """Every page of unit rates from an hour ago to 3 days ahead."""
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        # Banded products need earlier days to repeat: ask for the last 2 days too.
        if self.shape in ("banded", "fixed_hours"):
            start -= timedelta(days=2)
        url: str | None = (
            f"{self.cfg.base_url.rstrip('/')}/v1/products/{self.product}/electricity-tariffs/"
            f"{self.tariff}/standard-unit-rates/"
        )
        params: dict[str, str] | None = {
            "period_from": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "period_to": (start + timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "page_size": "1500",
        }
        out: list[Interval] = []
        claimed: int | None = None
        for _page in range(MAX_PAGES):
            r = await request(http, clock, self.cfg, self.provider, url or "", params=params)
            rates, url, count = parse_octopus_rates(json_of(self.provider, r), self.provider, now)
            claimed = count if claimed is None else claimed
            out.extend(rates)
            params = None  # `next` carries the query
            if url is None:
                break
        else:
            raise ReplyError(self.provider, "next", f"more than {MAX_PAGES} pages")
        if claimed is not None and len(out) < claimed:
            raise ReplyError(self.provider, "count", f"says {claimed} rows, got {len(out)}")
        check_shape(self.provider, out, self.shape)
        return out

    def price(self, stored: list[Interval], start: datetime, end: datetime) -> float | None:
        if self.shape == "banded":
            return repeat_daily_price(stored, start, end)
        if self.shape == "fixed_hours":
            return fixed_hours_price(
                stored, start, (self.cfg.off_peak_start, self.cfg.off_peak_end)
            )
        return price_in(stored, start, end)


_IMPORT_SHAPE: dict[str, Shape] = {
    "octopus_agile": "dated",
    "octopus_tracker": "daily",
    "octopus_go": "banded",
    "octopus_cosy": "banded",
    "octopus_flux": "banded",
    "octopus_intelligent_go": "fixed_hours",
}


def octopus_sources(kind: str, cfg: OctopusConfig) -> list[PriceSource]:
    """The import source, and the export one when export codes are given."""
    sources: list[PriceSource] = [
        OctopusRates(cfg, cfg.product_code, cfg.tariff_code, "import", _IMPORT_SHAPE[kind])
    ]
    if cfg.export_product_code and cfg.export_tariff_code:
        exp: Shape = "dated" if cfg.export_product_code.startswith("AGILE-") else "banded"
        sources.append(
            OctopusRates(cfg, cfg.export_product_code, cfg.export_tariff_code, "export", exp)
        )
    return sources


class OctopusTariff(FetchedTariff):
    """Any Octopus kind: import rates, and export rates when export codes are given."""

    def __init__(
        self,
        cfg: TariffConfig,
        db: Database,
        http: httpx.AsyncClient,
        clock: Clock,
        timezone: str = "Europe/London",
    ) -> None:
        super().__init__(cfg, db, http, clock, octopus_sources(cfg.kind, cfg.octopus), timezone)
