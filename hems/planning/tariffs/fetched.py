"""A tariff whose prices are fetched: one `PriceSource` per direction, each on its own
schedule, cached in SQLite (`tariff_prices`, owned here), and the last good prices kept
through an outage or a bad reply, which the plan's notes and the log name."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog

from hems.core.clock import Clock
from hems.planning.tariff_config import FetchConfig, TariffConfig
from hems.planning.tariffs.base import Interval, SlotPrices, Tariff, price_in
from hems.planning.tariffs.fetch import FAR_PAST, FetchError, FetchSchedule
from hems.store.db import Database
from hems.store.timeseries import from_ms, to_ms

log = structlog.get_logger(__name__)


class PriceSource:
    """One fetched price series. Subclasses set the names and implement `fetch`; `price`
    turns the stored intervals into a slot's price (a formula, fixed hours, ...)."""

    provider = "source"  # e.g. "octopus AGILE-24-10-01": in notes and log lines
    cache_key = ""  # the `tariff_code` column
    direction = "import"
    cfg: FetchConfig

    async def fetch(self, http: httpx.AsyncClient, clock: Clock, now: datetime) -> list[Interval]:
        raise NotImplementedError

    def price(self, stored: list[Interval], start: datetime, end: datetime) -> float | None:
        return price_in(stored, start, end)


class FetchedTariff(Tariff):
    def __init__(
        self,
        cfg: TariffConfig,
        db: Database,
        http: httpx.AsyncClient,
        clock: Clock,
        sources: Sequence[PriceSource],
        timezone: str = "Europe/London",
    ) -> None:
        super().__init__(cfg, timezone)
        self.db, self.http, self.clock = db, http, clock
        self.sources = list(sources)
        self._stored: dict[str, list[Interval]] = {s.direction: [] for s in self.sources}
        self._failed: dict[str, str] = {}  # provider -> reason, while it fails
        self._due: dict[str, datetime] = {s.provider: FAR_PAST for s in self.sources}
        self._schedules = {s.provider: FetchSchedule(s.cfg, self.zone) for s in self.sources}
        self.attempted = False

    # Kept for the callers of the Agile-only tariff: one flag and one reason for all sources.
    @property
    def online(self) -> bool | None:
        return None if not self.attempted else not self._failed

    @property
    def last_error(self) -> str | None:
        return "; ".join(self._failed.values()) or None

    def source(self, direction: str) -> PriceSource | None:
        return next((s for s in self.sources if s.direction == direction), None)

    async def load_cache(self) -> None:
        """Last known prices from SQLite (at start, and for offline operation)."""
        since = to_ms(self.clock.now() - timedelta(days=2))
        for s in self.sources:
            rows = await self.db.fetchall(
                "SELECT valid_from_ms, valid_to_ms, price_per_kwh FROM tariff_prices"
                " WHERE tariff_code = ? AND direction = ? AND valid_to_ms > ?"
                " ORDER BY valid_from_ms",
                (s.cache_key, s.direction, since),
            )
            self._stored[s.direction] = [Interval(from_ms(r[0]), from_ms(r[1]), r[2]) for r in rows]
        await super().load_cache()

    async def refresh(self, *, force: bool = True) -> bool:
        """Fetch the sources (all of them, or with `force=False` those that are due)."""
        now = self.clock.now()
        changed = False
        failing_before = dict(self._failed)
        for s in self.sources:
            if not force and now < self._due[s.provider]:
                continue
            try:
                rates = await s.fetch(self.http, self.clock, now)
                changed |= await self._store(s, rates, now)
            except FetchError as exc:
                if self._failed.get(s.provider) != exc.reason:
                    log.warning(
                        "tariff fetch failed, keeping the last good prices",
                        provider=s.provider,
                        reason=exc.reason,
                    )
                self._failed[s.provider] = exc.reason
            else:
                if self._failed.pop(s.provider, None) is not None:
                    log.info("tariff fetch recovered", provider=s.provider)
            failed = s.provider in self._failed
            self._due[s.provider] = self._schedules[s.provider].next_after(now, failed=failed)
        self.attempted = True
        await self.load_cache()
        weight_changed, notice = await self._refresh_weights(force)
        changed |= weight_changed
        # A source failing or recovering changes the plan's notes: replan to show it.
        if changed or notice or self._failed != failing_before:
            self.version += 1
        return changed

    def next_fetch_after(self, now: datetime) -> datetime | None:
        times = [*self._due.values()]
        other = super().next_fetch_after(now)
        if other is not None:
            times.append(other)
        return min(times)

    async def _store(self, s: PriceSource, rates: list[Interval], now: datetime) -> bool:
        rows = [
            (s.cache_key, s.direction, to_ms(r.start), to_ms(r.end), r.price_per_kwh, to_ms(now))
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
        return max((r.end for r in self._stored.get(direction, [])), default=None)

    def _base_price(self, direction: str, start: datetime, end: datetime) -> float | None:
        s = self.source(direction)
        if s is None:
            return super()._base_price(direction, start, end)
        return s.price(self._stored[direction], start, end)

    def prices(self, start: datetime, n: int, step_min: int) -> SlotPrices:
        out = super().prices(start, n, step_min)
        if not self._failed:
            return out
        notes = tuple(
            f"tariff: {provider} fetch failed ({reason}); last good prices kept"
            for provider, reason in self._failed.items()
        )
        return SlotPrices(
            out.import_per_kwh, out.export_per_kwh, out.fallback_slots, notes + out.notes
        )
