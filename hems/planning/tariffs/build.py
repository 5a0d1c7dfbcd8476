"""`build_tariff`: the tariff for `planner.tariff`, with its sources and optional weight."""

from __future__ import annotations

import httpx

from hems.core.clock import Clock
from hems.errors import ConfigError
from hems.planning.tariff_config import OCTOPUS_PRODUCT_PREFIX, TariffConfig
from hems.planning.tariffs.base import Tariff, TouTariff
from hems.planning.tariffs.carbon import CarbonWeight
from hems.planning.tariffs.entsoe import entsoe_sources
from hems.planning.tariffs.fetched import FetchedTariff, PriceSource
from hems.planning.tariffs.nordpool import nordpool_sources
from hems.planning.tariffs.octopus import octopus_sources
from hems.planning.tariffs.tibber import tibber_sources
from hems.store.db import Database


def build_tariff(
    cfg: TariffConfig,
    *,
    db: Database | None,
    http: httpx.AsyncClient | None,
    clock: Clock,
    timezone: str = "Europe/London",
) -> Tariff:
    sources: list[PriceSource] = []
    if cfg.kind in OCTOPUS_PRODUCT_PREFIX:
        sources = octopus_sources(cfg.kind, cfg.octopus)
    elif cfg.kind == "entsoe":
        sources = entsoe_sources(cfg.entsoe, timezone)
    elif cfg.kind == "nordpool":
        sources = nordpool_sources(cfg.nordpool, cfg.currency)
    elif cfg.kind == "tibber":
        sources = tibber_sources(cfg.tibber, cfg.currency, timezone)
    if (sources or cfg.carbon.enabled) and http is None:
        raise ConfigError("planner.tariff.kind", f"{cfg.kind} needs an HTTP client")
    tariff: Tariff
    if sources:
        if db is None or http is None:
            raise ConfigError("planner.tariff.kind", f"{cfg.kind} needs the database")
        tariff = FetchedTariff(cfg, db, http, clock, sources, timezone)
    elif cfg.kind == "tou":
        tariff = TouTariff(cfg, timezone)
    else:
        tariff = Tariff(cfg, timezone)
    if cfg.carbon.enabled and http is not None:
        tariff.carbon = CarbonWeight(cfg.carbon, cfg.currency, http, clock, tariff.zone)
    return tariff
