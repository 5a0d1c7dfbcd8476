"""What the day-ahead market sources share: the spot price cached as it came, the retail
formula applied when a slot is priced (so a changed fee or VAT rate applies to cached prices
too), and export at spot from the same reply:

    import_per_kwh = (spot_per_kwh + grid_fee_per_kwh) × (1 + vat_fraction)
    export_per_kwh = spot_per_kwh − export_fee_per_kwh          (with `export: spot`)
"""

from __future__ import annotations

from datetime import datetime

import httpx

from hems.core.clock import Clock
from hems.planning.tariff_config import DayAheadConfig
from hems.planning.tariffs.base import Interval, price_in
from hems.planning.tariffs.fetch import FetchError
from hems.planning.tariffs.fetched import PriceSource


def retail_price_per_kwh(
    spot_per_kwh: float, grid_fee_per_kwh: float, vat_fraction: float
) -> float:
    """(spot + grid fee) × (1 + VAT). [currency/kWh]"""
    return (spot_per_kwh + grid_fee_per_kwh) * (1.0 + vat_fraction)


class SpotImport(PriceSource):
    """Subclasses fetch spot prices [currency/kWh] in `fetch_spot`; `last` keeps this
    refresh's reply for the export side."""

    direction = "import"
    cfg: DayAheadConfig

    def __init__(self) -> None:
        self.last: list[Interval] | None = None

    async def fetch_spot(
        self, http: httpx.AsyncClient, clock: Clock, now: datetime
    ) -> list[Interval]:
        raise NotImplementedError

    async def fetch(self, http: httpx.AsyncClient, clock: Clock, now: datetime) -> list[Interval]:
        self.last = None
        self.last = await self.fetch_spot(http, clock, now)
        return self.last

    def price(self, stored: list[Interval], start: datetime, end: datetime) -> float | None:
        spot = price_in(stored, start, end)
        if spot is None:
            return None
        return retail_price_per_kwh(spot, self.cfg.grid_fee_per_kwh, self.cfg.vat_fraction)


class SpotExport(PriceSource):
    """Export at spot minus a fee, from the import source's reply (one request for both)."""

    direction = "export"

    def __init__(self, spot: SpotImport) -> None:
        self.spot, self.cfg = spot, spot.cfg
        self.provider = f"{spot.provider} (export)"
        self.cache_key = spot.cache_key

    async def fetch(self, http: httpx.AsyncClient, clock: Clock, now: datetime) -> list[Interval]:
        if self.spot.last is None:
            raise FetchError(self.provider, "the day-ahead fetch failed")
        return self.spot.last

    def price(self, stored: list[Interval], start: datetime, end: datetime) -> float | None:
        spot = price_in(stored, start, end)
        return None if spot is None else spot - self.spot.cfg.export_fee_per_kwh


def spot_sources(imp: SpotImport) -> list[PriceSource]:
    return [imp, SpotExport(imp)] if imp.cfg.export == "spot" else [imp]
