"""Tibber prices over GraphQL (HTTPS POST, `Authorization: Bearer <token>`):

    { viewer { homes { id currentSubscription { priceInfo {
        today { total startsAt currency } tomorrow { total startsAt currency } } } } } }

`total` is the price the customer pays per kWh (energy, grid where Tibber bills it, taxes),
in `currency`; `startsAt` is local time with its offset. Each entry lasts until the next one
starts (hourly or quarter-hourly). `tomorrow` is empty until the day-ahead prices are out.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from hems.core.clock import Clock
from hems.planning.tariff_config import TibberConfig
from hems.planning.tariffs.base import Interval
from hems.planning.tariffs.fetch import FetchError, ReplyError, json_of, parse_utc, request
from hems.planning.tariffs.fetched import PriceSource

QUERY = (
    "{ viewer { homes { id currentSubscription { priceInfo { "
    "today { total startsAt currency } tomorrow { total startsAt currency } } } } } }"
)
HOUR = timedelta(hours=1)
MAX_PER_KWH = 100.0  # a kWh never costs more than this in any currency Tibber bills


def parse_tibber(
    payload: Any, currency: str, zone: ZoneInfo, home_id: str | None, provider: str = "tibber"
) -> list[Interval]:
    """A `priceInfo` reply → intervals in currency/kWh. Refuses GraphQL errors, another
    currency, a day that does not start at local midnight in `zone` (a time-zone mix-up),
    and a day the entries do not fill (a short reply)."""
    if not isinstance(payload, dict):
        raise ReplyError(provider, "body", "not a JSON object")
    if payload.get("errors"):
        errors = payload["errors"]
        first = errors[0] if isinstance(errors, list) and errors else errors
        message = first.get("message") if isinstance(first, dict) else first
        raise FetchError(provider, f"GraphQL error: {str(message)[:200]}")
    try:
        homes = payload["data"]["viewer"]["homes"]
    except (KeyError, TypeError):
        raise ReplyError(provider, "data.viewer.homes", "missing") from None
    if not isinstance(homes, list) or not homes:
        raise ReplyError(provider, "data.viewer.homes", "no home on this account")
    if home_id is None:
        index, home = 0, homes[0]
    else:
        found = [
            (i, h) for i, h in enumerate(homes) if isinstance(h, dict) and h.get("id") == home_id
        ]
        if not found:
            raise ReplyError(provider, "data.viewer.homes", f"no home with id {home_id}")
        index, home = found[0]
    base = f"data.viewer.homes[{index}].currentSubscription.priceInfo"
    try:
        info = home["currentSubscription"]["priceInfo"]
    except (KeyError, TypeError):
        raise ReplyError(provider, base, "missing (no current subscription?)") from None
    out: list[Interval] = []
    for day in ("today", "tomorrow"):
        entries = info.get(day) if isinstance(info, dict) else None
        if entries is None and day == "tomorrow":
            continue
        if not isinstance(entries, list):
            raise ReplyError(provider, f"{base}.{day}", "missing or not a list")
        if not entries:
            if day == "today":
                raise ReplyError(provider, f"{base}.today", "empty (a short reply)")
            continue
        out.extend(_day(provider, f"{base}.{day}", entries, currency, zone))
    return out


def _day(
    provider: str, where: str, entries: list[Any], currency: str, zone: ZoneInfo
) -> list[Interval]:
    starts: list[datetime] = []
    values: list[float] = []
    for i, e in enumerate(entries):
        field = f"{where}[{i}]"
        if not isinstance(e, dict):
            raise ReplyError(provider, field, "not an object")
        if e.get("currency") != currency:
            raise ReplyError(
                provider, f"{field}.currency", f"{e.get('currency')!r}, the config says {currency}"
            )
        total = e.get("total")
        if (
            isinstance(total, bool)
            or not isinstance(total, int | float)
            or not math.isfinite(total)
        ):
            raise ReplyError(provider, f"{field}.total", f"not a number: {total!r}")
        if abs(total) > MAX_PER_KWH:
            raise ReplyError(provider, f"{field}.total", f"{total} is not per kWh (wrong units?)")
        starts.append(parse_utc(provider, f"{field}.startsAt", e.get("startsAt")))
        values.append(float(total))
    local0 = starts[0].astimezone(zone)
    if (local0.hour, local0.minute) != (0, 0):
        raise ReplyError(
            provider,
            f"{where}[0].startsAt",
            f"{entries[0].get('startsAt')} is not midnight in {zone.key} (wrong time zone?)",
        )
    steps = {b - a for a, b in itertools.pairwise(starts)}
    if len(steps) > 1 or (
        steps and next(iter(steps)) not in (timedelta(minutes=15), timedelta(hours=1))
    ):
        raise ReplyError(provider, f"{where}.startsAt", "not evenly 15 min or 1 h apart")
    step = next(iter(steps)) if steps else timedelta(hours=1)
    day_start = local0
    next_midnight = datetime.combine(
        day_start.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone
    )
    # 23, 24 or 25 h; in UTC, since a difference within one zone is wall-clock time.
    day_len = next_midnight.astimezone(UTC) - day_start.astimezone(UTC)
    if len(starts) * step != day_len:
        raise ReplyError(
            provider,
            where,
            f"{len(starts)} entries cover {len(starts) * step / HOUR:g} h, not the day's"
            f" {day_len / HOUR:g} h (a short reply)",
        )
    return [Interval(a, a + step, v) for a, v in zip(starts, values, strict=True)]


class TibberPrices(PriceSource):
    direction = "import"

    def __init__(self, cfg: TibberConfig, currency: str, zone: ZoneInfo) -> None:
        self.cfg, self.currency, self.zone = cfg, currency, zone
        self.provider = "tibber"
        self.cache_key = f"tibber:{cfg.home_id or 'first-home'}"

    async def fetch(self, http: httpx.AsyncClient, clock: Clock, now: datetime) -> list[Interval]:
        token = self.cfg.token.get_secret_value() if self.cfg.token else ""
        r = await request(
            http,
            clock,
            self.cfg,
            self.provider,
            self.cfg.base_url,
            headers={"Authorization": f"Bearer {token}"},
            json_body={"query": QUERY},
        )
        return parse_tibber(
            json_of(self.provider, r), self.currency, self.zone, self.cfg.home_id, self.provider
        )


def tibber_sources(cfg: TibberConfig, currency: str, timezone: str) -> list[PriceSource]:
    return [TibberPrices(cfg, currency, ZoneInfo(timezone))]
