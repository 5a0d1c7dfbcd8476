"""Tariffs: what a kWh costs (import) and earns (export) in every planning slot.

Modules, one per provider, behind this one import path:

* `base`: `Tariff` (fixed prices), `TouTariff` (bands by local time, weekday/weekend,
  months), aggregator price signals (`inject_signal`, which override any tariff), and the
  pure lookups. Standing charges are carried for display only; the optimiser never sees them.
* `fetched`: `FetchedTariff`, prices from `PriceSource`s, cached in SQLite (owner of
  `tariff_prices`); an outage or a bad reply keeps the last good prices and says so in the
  plan's notes and the log; beyond the known prices the configured fallback, flagged.
* `fetch`: the errors (`FetchError`, `ReplyError` naming the input), one HTTP request with
  retries, and `FetchSchedule` (APScheduler cron triggers on the injected clock).
* `octopus`: Agile, Go, Intelligent Go, Cosy, Flux, Tracker (and their export products).
* `dayahead`: the day-ahead sources' retail formula (grid fee, VAT) and spot export.
* `entsoe`: ENTSO-E day-ahead prices (A44 XML, EUR/MWh).
* `nordpool`: Nord Pool day-ahead prices (Data Portal JSON, currency/MWh).
* `tibber`: Tibber's `priceInfo` over GraphQL.
* `carbon`: the GB regional carbon-intensity forecast as an import-price weight.
* `build`: `build_tariff(cfg, …)`.
"""

from __future__ import annotations

from hems.planning.tariffs.base import (
    Interval,
    SlotPrices,
    Tariff,
    TouTariff,
    price_in,
    tou_price_at,
)
from hems.planning.tariffs.build import build_tariff
from hems.planning.tariffs.carbon import CarbonWeight, parse_carbon_intensity
from hems.planning.tariffs.dayahead import retail_price_per_kwh
from hems.planning.tariffs.entsoe import EntsoeDayAhead, parse_a44
from hems.planning.tariffs.fetch import FetchError, FetchSchedule, ReplyError
from hems.planning.tariffs.fetched import FetchedTariff, PriceSource
from hems.planning.tariffs.nordpool import NordpoolDayAhead, parse_nordpool
from hems.planning.tariffs.octopus import OctopusRates, OctopusTariff, parse_octopus_rates
from hems.planning.tariffs.tibber import TibberPrices, parse_tibber

AgileTariff = OctopusTariff  # the Agile-only class's name in earlier releases

__all__ = [
    "AgileTariff",
    "CarbonWeight",
    "EntsoeDayAhead",
    "FetchError",
    "FetchSchedule",
    "FetchedTariff",
    "Interval",
    "NordpoolDayAhead",
    "OctopusRates",
    "OctopusTariff",
    "PriceSource",
    "ReplyError",
    "SlotPrices",
    "Tariff",
    "TibberPrices",
    "TouTariff",
    "build_tariff",
    "parse_a44",
    "parse_carbon_intensity",
    "parse_nordpool",
    "parse_octopus_rates",
    "parse_tibber",
    "price_in",
    "retail_price_per_kwh",
    "tou_price_at",
]
