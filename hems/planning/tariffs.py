"""Tariffs: what a kWh costs (import) and earns (export) in every planning slot.

* `FixedTariff`, `TouTariff` (bands by local time, weekday/weekend, months) — pure.
* `AgileTariff` — Octopus Agile import and Agile Outgoing export from the public REST API
  (`/v1/products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/`, paged with
  `next`, `value_inc_vat` in p/kWh → currency/kWh), cached in SQLite. Tomorrow's prices
  appear around 16:00 UK time; until then, and whenever the API is unreachable, the last
  known prices are used and the rest is filled with the configured fallback, flagged.
* Every tariff accepts aggregator price signals (`inject_signal`), which override it.
* Standing charges are carried for display only; the optimiser never sees them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import structlog

from hems.core.clock import Clock
from hems.core.localtime import minute_of_day
from hems.errors import ConfigError
from hems.planning.config import TariffConfig, TouBand
from hems.store.db import Database
from hems.store.timeseries import from_ms, to_ms

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SlotPrices:
    """Prices for `n` slots, plus which of them are not real tariff prices."""

    import_per_kwh: list[float]
    export_per_kwh: list[float]
    fallback_slots: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime
    price_per_kwh: float


# -- pure price lookups ------------------------------------------------------------------


def tou_price_at(bands: list[TouBand], local: datetime) -> tuple[float, float | None] | None:
    """(import, export) of the first band covering `local` (a zone-aware local time)."""
    minute = local.hour * 60 + local.minute
    weekend = local.weekday() >= 5
    for band in bands:
        if (band.days == "weekday" and weekend) or (band.days == "weekend" and not weekend):
            continue
        if local.month not in band.months:
            continue
        s, e = minute_of_day(band.start), minute_of_day(band.end)
        inside = (s <= minute < e) if s < e else (minute >= s or minute < e)
        if s == e or inside:
            return band.import_per_kwh, band.export_per_kwh
    return None


def price_in(intervals: list[Interval], start: datetime, end: datetime) -> float | None:
    """Time-weighted mean price over [start, end); None unless fully covered."""
    covered_s = 0.0
    total = 0.0
    for iv in intervals:
        a, b = max(iv.start, start), min(iv.end, end)
        if b > a:
            d = (b - a).total_seconds()
            covered_s += d
            total += d * iv.price_per_kwh
    span_s = (end - start).total_seconds()
    if span_s <= 0 or covered_s < span_s - 1e-6:
        return None
    return total / span_s


def parse_octopus_rates(payload: Any) -> tuple[list[Interval], str | None]:
    """One page of `standard-unit-rates` → intervals in currency/kWh, and the `next` URL.

    Raises ValueError naming the bad field; rows with a missing `valid_to` (an open-ended
    fixed price) end 2 days after `valid_from`.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ValueError("results: missing or not a list")
    out: list[Interval] = []
    for i, row in enumerate(payload["results"]):
        try:
            value = float(row["value_inc_vat"])
            start = datetime.fromisoformat(row["valid_from"].replace("Z", "+00:00"))
            end_raw = row.get("valid_to")
            end = (
                datetime.fromisoformat(end_raw.replace("Z", "+00:00"))
                if end_raw
                else start + timedelta(days=2)
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"results[{i}]: {exc!r}") from exc
        if not math.isfinite(value) or end <= start:
            raise ValueError(f"results[{i}]: bad value or interval")
        out.append(Interval(start.astimezone(UTC), end.astimezone(UTC), value / 100.0))
    nxt = payload.get("next")
    return out, nxt if isinstance(nxt, str) and nxt else None


# -- tariffs -----------------------------------------------------------------------------


@dataclass
class _Signals:
    """Aggregator price signals, which override the tariff where given."""

    imp: list[Interval] = field(default_factory=list)
    exp: list[Interval] = field(default_factory=list)


class Tariff:
    """Base: fixed prices. Subclasses override `_base_price`. Pure apart from `refresh`."""

    def __init__(self, cfg: TariffConfig, timezone: str = "Europe/London") -> None:
        self.cfg = cfg
        self.zone = ZoneInfo(timezone)
        self._signals = _Signals()
        self.version = 0  # bumped whenever prices change, so the planner replans

    @property
    def standing_charge_per_day(self) -> float:
        """Shown to the user; never part of the optimisation."""
        return self.cfg.standing_charge_per_day

    async def load_cache(self) -> None:
        """Load the last known prices, for a tariff that stores fetched ones."""

    async def refresh(self) -> bool:
        """Fetch new prices if the tariff has a source; True if anything changed."""
        return False

    def known_until(self, direction: str = "import") -> datetime | None:
        """End of the fetched prices; None when the tariff fetches none."""
        return None

    def inject_signal(
        self,
        start: datetime,
        step_min: int,
        import_per_kwh: list[float],
        export_per_kwh: list[float] | None = None,
    ) -> None:
        """An aggregator's price series from `start`, one value per `step_min`."""
        step = timedelta(minutes=step_min)
        for signals, values in (
            (self._signals.imp, import_per_kwh),
            (self._signals.exp, export_per_kwh or []),
        ):
            signals.extend(
                Interval(start + i * step, start + (i + 1) * step, v) for i, v in enumerate(values)
            )
        self.version += 1

    def clear_signal(self, start: datetime, end: datetime) -> None:
        """Withdraw the signals inside [start, end) (a cancelled price event)."""
        for signals in (self._signals.imp, self._signals.exp):
            signals[:] = [iv for iv in signals if not (start <= iv.start and iv.end <= end)]
        self.version += 1

    def _base_price(self, direction: str, start: datetime, end: datetime) -> float | None:
        if direction == "import":
            return self.cfg.fixed_import_per_kwh
        return self.cfg.fixed_export_per_kwh

    def prices(self, start: datetime, n: int, step_min: int) -> SlotPrices:
        step = timedelta(minutes=step_min)
        imp: list[float] = []
        exp: list[float] = []
        fallback = {
            "import": self.cfg.fallback_import_per_kwh,
            "export": self.cfg.fallback_export_per_kwh,
        }
        missing: dict[str, list[datetime]] = {"import": [], "export": []}
        for i in range(n):
            a, b = start + i * step, start + (i + 1) * step
            for direction, out, signals in (
                ("import", imp, self._signals.imp),
                ("export", exp, self._signals.exp),
            ):
                value = price_in(signals, a, b)
                if value is None:
                    value = self._base_price(direction, a, b)
                if value is None:
                    missing[direction].append(a)
                    value = fallback[direction]
                out.append(value)
        notes = [
            f"tariff.{direction}: no price for {len(when)} slots from "
            f"{when[0].astimezone(self.zone):%Y-%m-%d %H:%M}; fallback {fallback[direction]:g} "
            f"{self.cfg.currency}/kWh used"
            for direction, when in missing.items()
            if when
        ]
        return SlotPrices(imp, exp, len(missing["import"]) + len(missing["export"]), tuple(notes))


class TouTariff(Tariff):
    def _base_price(self, direction: str, start: datetime, end: datetime) -> float | None:
        # Bands change on whole minutes; the slot's start decides (slots are 15/30 min).
        found = tou_price_at(self.cfg.bands, start.astimezone(self.zone))
        if found is None:
            return None
        imp, exp = found
        if direction == "import":
            return imp
        return exp if exp is not None else self.cfg.fixed_export_per_kwh


class AgileTariff(Tariff):
    """Octopus Agile (import) and optionally Agile Outgoing (export), cached in SQLite."""

    def __init__(
        self,
        cfg: TariffConfig,
        db: Database,
        http: httpx.AsyncClient,
        clock: Clock,
        timezone: str = "Europe/London",
    ) -> None:
        super().__init__(cfg, timezone)
        self.db = db
        self.http = http
        self.clock = clock
        self._rates: dict[str, list[Interval]] = {"import": [], "export": []}
        self.online: bool | None = None  # None until the first fetch
        self.last_error: str | None = None

    def _codes(self) -> list[tuple[str, str, str]]:
        o = self.cfg.octopus
        codes = [("import", o.product_code, o.tariff_code)]
        if o.export_product_code and o.export_tariff_code:
            codes.append(("export", o.export_product_code, o.export_tariff_code))
        return codes

    async def load_cache(self) -> None:
        """Last known prices from SQLite (at start, and for offline operation)."""
        since = to_ms(self.clock.now() - timedelta(days=2))
        for direction, _product, tariff in self._codes():
            rows = await self.db.fetchall(
                "SELECT valid_from_ms, valid_to_ms, price_per_kwh FROM tariff_prices"
                " WHERE tariff_code = ? AND direction = ? AND valid_to_ms > ?"
                " ORDER BY valid_from_ms",
                (tariff, direction, since),
            )
            self._rates[direction] = [Interval(from_ms(r[0]), from_ms(r[1]), r[2]) for r in rows]

    async def fetch(self, product: str, tariff: str, start: datetime) -> list[Interval]:
        """Every page of unit rates from `start`; retries with exponential backoff."""
        o = self.cfg.octopus
        url: str | None = (
            f"{o.base_url.rstrip('/')}/v1/products/{product}/electricity-tariffs/"
            f"{tariff}/standard-unit-rates/"
        )
        params: dict[str, str] | None = {
            "period_from": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "page_size": "1500",
        }
        out: list[Interval] = []
        pages = 0
        while url is not None:
            payload = await self._get_json(url, params)
            rates, url = parse_octopus_rates(payload)
            out.extend(rates)
            params = None  # `next` carries the query
            pages += 1
            if pages > 50:  # a server that pages forever must not hang the planner
                raise ValueError("next: more than 50 pages")
        return out

    async def _get_json(self, url: str, params: dict[str, str] | None) -> Any:
        o = self.cfg.octopus
        last: Exception | None = None
        for attempt in range(o.retries + 1):
            if attempt:
                await self.clock.sleep(o.backoff_s * 2 ** (attempt - 1))
            try:
                r = await self.http.get(url, params=params, timeout=o.timeout_s)
                if r.status_code == 429 or r.status_code >= 500:
                    last = httpx.HTTPStatusError(
                        f"HTTP {r.status_code}", request=r.request, response=r
                    )
                    continue
                r.raise_for_status()
                return r.json()
            except httpx.TransportError as exc:
                last = exc
        assert last is not None
        raise last

    async def refresh(self) -> bool:
        now = self.clock.now()
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        changed = False
        try:
            for direction, product, tariff in self._codes():
                rates = await self.fetch(product, tariff, start)
                changed |= await self._store(direction, tariff, rates, now)
        except (httpx.HTTPError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if self.online is not False:
                log.warning("tariff fetch failed, using last known prices", reason=reason)
            self.online, self.last_error = False, reason
            await self.load_cache()
            return False
        if self.online is False:
            log.info("tariff fetch recovered")
        self.online, self.last_error = True, None
        await self.load_cache()
        if changed:
            self.version += 1
        return changed

    async def _store(
        self, direction: str, tariff: str, rates: list[Interval], now: datetime
    ) -> bool:
        rows = [
            (tariff, direction, to_ms(r.start), to_ms(r.end), r.price_per_kwh, to_ms(now))
            for r in rates
        ]

        def write(conn: Any) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO tariff_prices(tariff_code, direction, valid_from_ms, valid_to_ms,"
                " price_per_kwh, fetched_at_ms) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(tariff_code, direction, valid_from_ms) DO UPDATE SET"
                " valid_to_ms = excluded.valid_to_ms, price_per_kwh = excluded.price_per_kwh,"
                " fetched_at_ms = excluded.fetched_at_ms"
                " WHERE price_per_kwh != excluded.price_per_kwh"
                " OR valid_to_ms != excluded.valid_to_ms",
                rows,
            )
            return conn.total_changes - before

        return await self.db.call(write) > 0

    def known_until(self, direction: str = "import") -> datetime | None:
        rates = self._rates[direction]
        return max((r.end for r in rates), default=None)

    def _base_price(self, direction: str, start: datetime, end: datetime) -> float | None:
        if direction == "export" and len(self._codes()) == 1:
            return self.cfg.fixed_export_per_kwh
        return price_in(self._rates[direction], start, end)

    def prices(self, start: datetime, n: int, step_min: int) -> SlotPrices:
        out = super().prices(start, n, step_min)
        if self.online is False:
            note = f"tariff: Octopus API unreachable ({self.last_error}); last known prices"
            return SlotPrices(
                out.import_per_kwh,
                out.export_per_kwh,
                out.fallback_slots,
                (note, *out.notes),
            )
        return out


def build_tariff(
    cfg: TariffConfig,
    *,
    db: Database | None,
    http: httpx.AsyncClient | None,
    clock: Clock,
    timezone: str = "Europe/London",
) -> Tariff:
    if cfg.kind == "tou":
        return TouTariff(cfg, timezone)
    if cfg.kind == "octopus_agile":
        if db is None or http is None:
            raise ConfigError(
                "planner.tariff.kind", "octopus_agile needs the database and an HTTP client"
            )
        return AgileTariff(cfg, db, http, clock, timezone)
    return Tariff(cfg, timezone)
