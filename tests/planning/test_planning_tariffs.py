"""Tariffs: Agile replayed from recorded JSON over local HTTP, TOU bands, signals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from planning_helpers import AutoClock

from hems.planning.config import TariffConfig
from hems.planning.tariffs import AgileTariff, ReplyError, Tariff, TouTariff, parse_octopus_rates
from hems.store.db import Database

NOW = datetime(2026, 11, 27, 16, 10, tzinfo=UTC)  # tomorrow's prices are out


def agile_cfg(base_url: str, export: bool = True) -> TariffConfig:
    octo: dict[str, object] = {"base_url": base_url, "retries": 2, "backoff_s": 0.5}
    if export:
        octo |= {
            "export_product_code": "AGILE-OUTGOING-19-05-13",
            "export_tariff_code": "E-1R-AGILE-OUTGOING-19-05-13-C",
        }
    return TariffConfig(
        kind="octopus_agile",
        octopus=octo,  # type: ignore[arg-type]
        fallback_import_per_kwh=0.30,
        fallback_export_per_kwh=0.04,
        standing_charge_per_day=0.5123,
    )


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await Database.open(tmp_path / "hems.db")
    yield database
    await database.close()


async def test_agile_pages_converts_and_caches(replay, db) -> None:  # type: ignore[no-untyped-def]
    clock = AutoClock(NOW)
    async with httpx.AsyncClient() as http:
        tariff = AgileTariff(agile_cfg(replay.base_url), db, http, clock)
        assert await tariff.refresh() is True
    # Two pages for import (followed through `next`), one for export.
    assert sum("AGILE-24-10-01" in r for r in replay.requests) == 2
    start = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    prices = tariff.prices(start, 4, 30)
    # Recorded values in p/kWh inc VAT for 02:00–04:00 on the 28th (a windy night).
    assert prices.import_per_kwh == pytest.approx([-0.0402, -0.0322, -0.0228, -0.0272])
    assert prices.fallback_slots == 0 and prices.notes == ()
    q = tariff.prices(start, 4, 15)  # 15-min slots repeat the half-hour price
    assert q.import_per_kwh[:2] == pytest.approx([-0.0402, -0.0402])
    assert tariff.known_until() == datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    rows = await db.fetchall("SELECT direction, count(*) FROM tariff_prices GROUP BY direction")
    assert {r[0]: r[1] for r in rows} == {"export": 64, "import": 64}
    assert tariff.standing_charge_per_day == pytest.approx(0.5123)
    # Nothing new on a second fetch: no replan trigger.
    async with httpx.AsyncClient() as http:
        tariff.http = http
        assert await tariff.refresh() is False


async def test_agile_retries_with_backoff_then_succeeds(replay, db) -> None:  # type: ignore[no-untyped-def]
    clock = AutoClock(NOW)
    replay.fail_next = 2
    async with httpx.AsyncClient() as http:
        tariff = AgileTariff(agile_cfg(replay.base_url, export=False), db, http, clock)
        assert await tariff.refresh() is True
    assert tariff.online is True
    assert clock.monotonic() == pytest.approx(0.5 + 1.0)  # backoff 0.5 s, then 1 s
    assert len(replay.requests) == 4  # 2 × 503, then both pages


async def test_offline_uses_last_known_prices_then_fallback_flagged(replay, db) -> None:  # type: ignore[no-untyped-def]
    clock = AutoClock(NOW)
    async with httpx.AsyncClient() as http:
        first = AgileTariff(agile_cfg(replay.base_url), db, http, clock)
        await first.refresh()
    # A restart while the API is down: prices come from SQLite.
    replay.down = True
    await clock.advance(6 * 3600)
    async with httpx.AsyncClient() as http:
        tariff = AgileTariff(agile_cfg(replay.base_url), db, http, clock)
        await tariff.load_cache()
        assert await tariff.refresh() is False
    assert tariff.online is False and "HTTP 503" in (tariff.last_error or "")
    start = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
    prices = tariff.prices(start, 4, 30)
    assert prices.import_per_kwh[:2] == pytest.approx([0.1676, 0.1649])
    assert prices.import_per_kwh[2:] == [0.30, 0.30]  # beyond the known prices
    assert prices.fallback_slots == 4  # 2 import + 2 export
    assert prices.notes[0] == (
        "tariff: octopus AGILE-24-10-01 fetch failed (HTTP 503 after 3 attempts);"
        " last good prices kept"
    )
    assert (
        "tariff.import: no price for 2 slots from 2026-11-28 23:00; fallback 0.3"
        in (prices.notes[2])
    )


async def test_unreachable_host_is_handled(db) -> None:  # type: ignore[no-untyped-def]
    cfg = agile_cfg("http://127.0.0.1:9", export=False)  # nothing listens on port 9
    clock = AutoClock(NOW)
    async with httpx.AsyncClient() as http:
        tariff = AgileTariff(cfg, db, http, clock)
        assert await tariff.refresh() is False
    assert tariff.online is False and "ConnectError" in (tariff.last_error or "")
    assert tariff.prices(NOW.replace(minute=0), 2, 30).import_per_kwh == [0.30, 0.30]


def test_parse_names_bad_rows() -> None:
    with pytest.raises(ReplyError, match=r"results\[1\]\.value_inc_vat: not a number"):
        parse_octopus_rates(
            {
                "results": [
                    {"value_inc_vat": 1, "valid_from": "2026-01-01T00:00:00Z",
                     "valid_to": "2026-01-01T00:30:00Z"},
                    {"value_inc_vat": "x", "valid_from": "2026-01-01T00:30:00Z"},
                ]
            }
        )  # fmt: skip
    with pytest.raises(ReplyError, match="results: missing"):
        parse_octopus_rates({"detail": "Not found."})


def test_tou_bands_weekday_weekend_and_season() -> None:
    cfg = TariffConfig(
        kind="tou",
        bands=[
            {"start": "00:30", "end": "05:30", "import_per_kwh": 0.07, "export_per_kwh": 0.15},
            {"start": "16:00", "end": "19:00", "import_per_kwh": 0.40, "days": "weekday",
             "months": [10, 11, 12, 1, 2, 3]},
            {"start": "00:00", "end": "00:00", "import_per_kwh": 0.25},
        ],  # type: ignore[list-item]
        fixed_export_per_kwh=0.12,
    )  # fmt: skip
    t = TouTariff(cfg, "Europe/London")
    fri = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)  # a Friday in winter, UK = UTC
    p = t.prices(fri, 48, 30)
    assert p.import_per_kwh[1:11] == [0.07] * 10 and p.import_per_kwh[0] == 0.25
    assert p.import_per_kwh[32:38] == [0.40] * 6
    assert p.export_per_kwh[1] == 0.15 and p.export_per_kwh[20] == 0.12
    sat = t.prices(fri + timedelta(days=1), 48, 30)
    assert sat.import_per_kwh[32] == 0.25  # no weekday peak at the weekend
    summer = t.prices(datetime(2026, 6, 5, 15, 0, tzinfo=UTC), 2, 30)  # 16:00 BST Friday
    assert summer.import_per_kwh == [0.25, 0.25]


def test_aggregator_signal_overrides_the_tariff() -> None:
    t = Tariff(TariffConfig(fixed_import_per_kwh=0.25, fixed_export_per_kwh=0.05))
    start = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    v0 = t.version
    t.inject_signal(start, 30, [0.9, 0.8], [0.6])
    assert t.version == v0 + 1
    p = t.prices(start - timedelta(minutes=30), 4, 30)
    assert p.import_per_kwh == [0.25, 0.9, 0.8, 0.25]
    assert p.export_per_kwh == [0.05, 0.6, 0.05, 0.05]


def test_fixed_export_in_pence_pairs_with_any_import_tariff() -> None:
    bands = [
        {"start": "00:30", "end": "05:30", "import_per_kwh": 0.07, "export_per_kwh": 0.30},
        {"start": "05:30", "end": "00:30", "import_per_kwh": 0.28},
    ]
    tou = TouTariff(TariffConfig(kind="tou", bands=bands, fixed_export_pence_per_kwh=4.1))  # type: ignore[arg-type]
    p = tou.prices(datetime(2026, 11, 27, 0, 0, tzinfo=UTC), 4, 30)
    assert p.import_per_kwh == [0.28, 0.07, 0.07, 0.07]
    assert p.export_per_kwh == pytest.approx([0.041] * 4)  # the export contract, not the bands
    fixed = Tariff(TariffConfig(fixed_export_pence_per_kwh=-1.5))  # negative: paying to export
    assert fixed.prices(datetime(2026, 11, 27, tzinfo=UTC), 1, 30).export_per_kwh == [-0.015]
