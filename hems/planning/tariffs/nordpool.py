"""Day-ahead market prices from the Nord Pool Data Portal, no account needed:
`GET {base_url}/DayAheadPrices?date=YYYY-MM-DD&market=DayAhead&deliveryArea={area}
&currency={currency}`, one delivery day (a CET day) per request. The reply's
`multiAreaEntries[]` carry `deliveryStart` / `deliveryEnd` (UTC) and `entryPerArea[area]`
in `currency` per MWh; HTTP 204 means the day is not published yet (tomorrow before the
auction). The retail formula is `hems.planning.tariffs.dayahead`'s.
"""

from __future__ import annotations

import itertools
import math
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from hems.core.clock import Clock
from hems.planning.tariff_config import NordpoolConfig
from hems.planning.tariffs.base import Interval
from hems.planning.tariffs.dayahead import SpotImport, spot_sources
from hems.planning.tariffs.fetch import FetchError, ReplyError, json_of, parse_utc, request
from hems.planning.tariffs.fetched import PriceSource

CET = ZoneInfo("Europe/Berlin")  # the delivery day's zone (CET/CEST)
MAX_PER_MWH = 100_000.0  # 4000 EUR/MWh (the SDAC cap) is about 46 000 SEK
STEPS = (timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1))


def parse_nordpool(
    payload: Any, area: str, currency: str, day: date, provider: str = "nordpool"
) -> list[Interval]:
    """One delivery day → spot intervals in currency/kWh. Refuses another currency or area,
    a time without a UTC offset, uneven periods, and a day the entries do not fill."""
    if not isinstance(payload, dict):
        raise ReplyError(provider, "body", "not a JSON object")
    if payload.get("currency") != currency:
        raise ReplyError(
            provider, "currency", f"{payload.get('currency')!r}, the config says {currency}"
        )
    entries = payload.get("multiAreaEntries")
    if not isinstance(entries, list) or not entries:
        raise ReplyError(provider, "multiAreaEntries", "missing or empty")
    out: list[Interval] = []
    for i, e in enumerate(entries):
        field = f"multiAreaEntries[{i}]"
        if not isinstance(e, dict):
            raise ReplyError(provider, field, "not an object")
        start = parse_utc(provider, f"{field}.deliveryStart", e.get("deliveryStart"))
        end = parse_utc(provider, f"{field}.deliveryEnd", e.get("deliveryEnd"))
        if end - start not in STEPS:
            raise ReplyError(provider, f"{field}.deliveryEnd", "not 15, 30 or 60 min after start")
        per_area = e.get("entryPerArea")
        value = per_area.get(area) if isinstance(per_area, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReplyError(provider, f"{field}.entryPerArea.{area}", f"not a number: {value!r}")
        if not math.isfinite(value) or abs(value) > MAX_PER_MWH:
            raise ReplyError(
                provider, f"{field}.entryPerArea.{area}", f"{value} is not per MWh (wrong units?)"
            )
        out.append(Interval(start, end, value / 1000.0))
    out.sort(key=lambda iv: iv.start)
    first = datetime.combine(day, datetime.min.time(), tzinfo=CET)
    last = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=CET)
    if out[0].start != first or out[-1].end != last:
        raise ReplyError(
            provider,
            "multiAreaEntries",
            f"{out[0].start:%Y-%m-%dT%H:%MZ}..{out[-1].end:%Y-%m-%dT%H:%MZ} is not the CET day "
            f"{day} (wrong time zone or a short reply)",
        )
    for a, b in itertools.pairwise(out):
        if a.end != b.start:
            raise ReplyError(provider, "multiAreaEntries", f"a gap at {a.end:%Y-%m-%dT%H:%MZ}")
    return out


class NordpoolDayAhead(SpotImport):
    def __init__(self, cfg: NordpoolConfig, currency: str) -> None:
        super().__init__()
        self.cfg, self.currency = cfg, currency
        self.provider = f"nordpool {cfg.delivery_area}"
        self.cache_key = f"nordpool:{cfg.delivery_area}:{currency}"

    async def fetch_spot(
        self, http: httpx.AsyncClient, clock: Clock, now: datetime
    ) -> list[Interval]:
        today = now.astimezone(CET).date()
        out: list[Interval] = []
        for day in (today, today + timedelta(days=1)):
            params = {
                "date": day.isoformat(),
                "market": "DayAhead",
                "deliveryArea": self.cfg.delivery_area,
                "currency": self.currency,
            }
            url = f"{self.cfg.base_url.rstrip('/')}/DayAheadPrices"
            r = await request(http, clock, self.cfg, self.provider, url, params=params)
            if r.status_code == 204:  # not published yet
                if day == today:
                    raise FetchError(self.provider, f"no prices for today ({day}): HTTP 204")
                break
            payload = json_of(self.provider, r)
            out.extend(
                parse_nordpool(payload, self.cfg.delivery_area, self.currency, day, self.provider)
            )
        return out


def nordpool_sources(cfg: NordpoolConfig, currency: str) -> list[PriceSource]:
    return spot_sources(NordpoolDayAhead(cfg, currency))
