"""Day-ahead market prices from the ENTSO-E Transparency Platform (document A44, XML).

Request: `GET {base_url}/api?securityToken=…&documentType=A44&in_Domain={zone}&out_Domain=
{zone}&periodStart=yyyyMMddHHmm&periodEnd=…` (UTC). Reply: a `Publication_MarketDocument`
whose `TimeSeries` carry `currency_Unit.name` EUR and `price_Measure_Unit.name` MWH, each
`Period` a UTC `timeInterval`, a `resolution` (PT15M, PT30M or PT60M) and `Point`s by
`position` (curve A03 omits a point that repeats the one before). No data comes back as an
`Acknowledgement_MarketDocument` with a `Reason`.

Currency and time are explicit: only EUR per MWh is accepted (the config's currency must be
EUR; nothing is converted) and every time is UTC with its `Z`. The retail formula is
`hems.planning.tariffs.dayahead`'s.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from hems.core.clock import Clock
from hems.planning.tariff_config import EntsoeConfig
from hems.planning.tariffs.base import Interval
from hems.planning.tariffs.dayahead import SpotImport, spot_sources
from hems.planning.tariffs.fetch import FetchError, ReplyError, parse_utc, request
from hems.planning.tariffs.fetched import PriceSource

RESOLUTIONS = {"PT15M": 15, "PT30M": 30, "PT60M": 60}
MAX_EUR_PER_MWH = 10000.0  # SDAC's harmonised limits are -500 and 4000 EUR/MWh
MAX_BODY_BYTES = 4_000_000


class RedactToken(logging.Filter):
    """httpx logs each request's URL (at INFO, shown with `logging.level: debug`); the
    ENTSO-E token is part of it, so it is masked before any handler sees it."""

    PATTERN = re.compile(r"securityToken=[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "securityToken=" in message:
            record.msg, record.args = self.PATTERN.sub("securityToken=***", message), ()
        return True


def _guard_httpx_log() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, RedactToken) for f in httpx_log.filters):
        httpx_log.addFilter(RedactToken())


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el if _local(c.tag) == name), None)


def _text(provider: str, el: ET.Element, path: str, where: str) -> str:
    node: ET.Element | None = el
    for part in path.split("/"):
        node = _child(node, part) if node is not None else None
    if node is None or node.text is None or not node.text.strip():
        raise ReplyError(provider, f"{where}/{path}", "missing")
    return node.text.strip()


def parse_a44(body: bytes, zone: str, provider: str = "entsoe") -> list[Interval]:
    """An A44 reply → spot-price intervals in EUR/kWh, earliest first.

    Refuses (ReplyError naming the element) another currency or unit, another bidding zone,
    an unknown resolution, a period whose points do not fill it, and implausible values.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ReplyError(provider, "body", f"{len(body)} bytes, more than an A44 reply")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ReplyError(provider, "body", f"not XML ({exc}; a truncated reply?)") from None
    kind = _local(root.tag)
    if kind == "Acknowledgement_MarketDocument":
        reason = _child(root, "Reason")
        text = "" if reason is None else (_text(provider, reason, "text", "Reason") or "")
        raise FetchError(provider, f"no prices: {text[:200]}")
    if kind != "Publication_MarketDocument":
        raise ReplyError(provider, kind, "not a Publication_MarketDocument")
    by_start: dict[datetime, Interval] = {}
    series = [c for c in root if _local(c.tag) == "TimeSeries"]
    if not series:
        raise ReplyError(provider, "TimeSeries", "none in the reply")
    for i, ts in enumerate(series):
        where = f"TimeSeries[{i}]"
        currency = _text(provider, ts, "currency_Unit.name", where)
        unit = _text(provider, ts, "price_Measure_Unit.name", where)
        if currency != "EUR" or unit != "MWH":
            raise ReplyError(
                provider, f"{where}/currency_Unit.name", f"{currency}/{unit}, expected EUR/MWH"
            )
        domain = _text(provider, ts, "in_Domain.mRID", where)
        if domain != zone:
            raise ReplyError(provider, f"{where}/in_Domain.mRID", f"{domain}, not {zone}")
        curve_el = _child(ts, "curveType")
        curve = (curve_el.text or "").strip() if curve_el is not None else "A01"
        for j, period in enumerate(c for c in ts if _local(c.tag) == "Period"):
            pw = f"{where}/Period[{j}]"
            for start, iv in _period(provider, period, pw, curve):
                by_start.setdefault(start, iv)  # the first series wins an overlap
    return [by_start[k] for k in sorted(by_start)]


def _period(
    provider: str, period: ET.Element, where: str, curve: str
) -> list[tuple[datetime, Interval]]:
    start = parse_utc(
        provider,
        f"{where}/timeInterval/start",
        _text(provider, period, "timeInterval/start", where),
    )
    end = parse_utc(
        provider, f"{where}/timeInterval/end", _text(provider, period, "timeInterval/end", where)
    )
    res_raw = _text(provider, period, "resolution", where)
    if res_raw not in RESOLUTIONS:
        raise ReplyError(
            provider, f"{where}/resolution", f"{res_raw!r} is not PT15M, PT30M or PT60M"
        )
    step = timedelta(minutes=RESOLUTIONS[res_raw])
    n = (end - start) // step
    if n <= 0 or start + n * step != end:
        raise ReplyError(provider, f"{where}/timeInterval", f"not a whole number of {res_raw}")
    values: dict[int, float] = {}
    for k, point in enumerate(c for c in period if _local(c.tag) == "Point"):
        pos_raw = _text(provider, point, "position", f"{where}/Point[{k}]")
        amount_raw = _text(provider, point, "price.amount", f"{where}/Point[{k}]")
        if not re.fullmatch(r"\d{1,4}", pos_raw) or not 1 <= int(pos_raw) <= n:
            raise ReplyError(provider, f"{where}/Point[{k}]/position", f"{pos_raw!r} not in 1..{n}")
        try:
            amount = float(amount_raw)
        except ValueError:
            raise ReplyError(
                provider, f"{where}/Point[{k}]/price.amount", f"not a number: {amount_raw!r}"
            ) from None
        if not abs(amount) <= MAX_EUR_PER_MWH:
            raise ReplyError(
                provider,
                f"{where}/Point[{k}]/price.amount",
                f"{amount_raw} is not EUR/MWh (wrong units?)",
            )
        values[int(pos_raw)] = amount
    if 1 not in values:
        raise ReplyError(provider, f"{where}/Point", "no point at position 1")
    if curve != "A03" and len(values) < n:
        raise ReplyError(provider, f"{where}/Point", f"{len(values)} of {n} points (a short reply)")
    out: list[tuple[datetime, Interval]] = []
    last = values[1]
    for pos in range(1, n + 1):
        last = values.get(pos, last)  # A03: an omitted point repeats the one before
        a = start + (pos - 1) * step
        out.append((a, Interval(a, a + step, last / 1000.0)))
    return out


class EntsoeDayAhead(SpotImport):
    def __init__(self, cfg: EntsoeConfig, zone: ZoneInfo | None = None) -> None:
        super().__init__()
        _guard_httpx_log()
        self.cfg = cfg
        self.provider = f"entsoe {cfg.bidding_zone}"
        self.cache_key = f"entsoe:{cfg.bidding_zone}"
        self.zone = zone or ZoneInfo("Europe/Brussels")

    async def fetch_spot(
        self, http: httpx.AsyncClient, clock: Clock, now: datetime
    ) -> list[Interval]:
        day = now.astimezone(self.zone).replace(hour=0, minute=0, second=0, microsecond=0)
        # Today and tomorrow, midnight to midnight local (wall-clock days, DST-safe).
        start, end = day.astimezone(UTC), (day + timedelta(days=2)).astimezone(UTC)
        token = self.cfg.security_token.get_secret_value() if self.cfg.security_token else ""
        params = {
            "securityToken": token,
            "documentType": "A44",
            "in_Domain": self.cfg.bidding_zone,
            "out_Domain": self.cfg.bidding_zone,
            "periodStart": f"{start:%Y%m%d%H%M}",
            "periodEnd": f"{end:%Y%m%d%H%M}",
        }
        url = f"{self.cfg.base_url.rstrip('/')}/api"
        r = await request(http, clock, self.cfg, self.provider, url, params=params)
        return parse_a44(r.content, self.cfg.bidding_zone, self.provider)


def entsoe_sources(cfg: EntsoeConfig, timezone: str = "Europe/Brussels") -> list[PriceSource]:
    return spot_sources(EntsoeDayAhead(cfg, ZoneInfo(timezone)))
