"""Octopus Go, Intelligent Go, Cosy, Flux (import and export) and Tracker, replayed from
recorded `standard-unit-rates` replies over local HTTP; the codes' validation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from planning_helpers import AutoClock
from pydantic import ValidationError
from tariff_server import TariffApi, octopus_path

from hems.planning.config import TariffConfig
from hems.planning.tariffs import FetchedTariff, build_tariff
from hems.store.db import Database

NOW = datetime(2026, 11, 27, 16, 10, tzinfo=UTC)  # a Friday; UK time is UTC in winter
START = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)

CODES = {
    "octopus_go": ("GO-VAR-22-10-14", "E-1R-GO-VAR-22-10-14-C"),
    "octopus_intelligent_go": ("INTELLI-VAR-22-10-14", "E-1R-INTELLI-VAR-22-10-14-C"),
    "octopus_cosy": ("COSY-22-12-08", "E-1R-COSY-22-12-08-C"),
    "octopus_flux": ("FLUX-IMPORT-23-02-14", "E-1R-FLUX-IMPORT-23-02-14-C"),
    "octopus_tracker": ("SILVER-24-12-31", "E-1R-SILVER-24-12-31-C"),
}


def cfg(kind: str, base_url: str, **extra: object) -> TariffConfig:
    product, tariff = CODES[kind]
    octopus = {"base_url": base_url, "product_code": product, "tariff_code": tariff}
    octopus |= extra.pop("octopus", {})  # type: ignore[arg-type]
    return TariffConfig.model_validate(
        {"kind": kind, "octopus": octopus, "fallback_import_per_kwh": 0.99, **extra}
    )


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await Database.open(tmp_path / "hems.db")
    yield database
    await database.close()


def at(day: int, hh: int, mm: int = 0) -> int:
    """Index of the 30-min slot starting at 2026-11-{day} hh:mm UTC, counted from START."""
    t = datetime(2026, 11, day, hh, mm, tzinfo=UTC)
    return int((t - START) / timedelta(minutes=30))


# kind, {slot: import price [GBP/kWh]}: inside the recording, and after it (the bands repeat).
TABLE = [
    ("octopus_go", {at(27, 16): 0.2737, at(28, 0, 30): 0.085, at(28, 4): 0.085,
                    at(28, 4, 30): 0.2737, at(29, 1): 0.085, at(29, 12): 0.2737}),
    ("octopus_cosy", {at(27, 17): 0.4143, at(27, 22): 0.1382, at(28, 5): 0.1382,
                      at(28, 14): 0.1382, at(28, 18): 0.4143, at(28, 20): 0.2761}),
    ("octopus_flux", {at(27, 18): 0.3898, at(28, 3): 0.167, at(28, 12): 0.2784}),
    ("octopus_tracker", {at(27, 20): 0.2415, at(28, 0): 0.2147, at(28, 23, 30): 0.2147}),
    # Intelligent Go on fixed hours 23:30-05:30, beyond the recording too.
    ("octopus_intelligent_go", {at(27, 23): 0.2703, at(27, 23, 30): 0.07, at(28, 5): 0.07,
                                at(28, 5, 30): 0.2703, at(28, 23, 30): 0.07,
                                at(29, 5): 0.07, at(29, 6): 0.2703}),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "expected"), TABLE, ids=[k for k, _ in TABLE])
async def test_octopus_products_price_the_horizon(
    tariff_api: TariffApi, db, kind, expected
) -> None:  # type: ignore[no-untyped-def]
    clock = AutoClock(NOW)
    async with httpx.AsyncClient() as http:
        tariff = build_tariff(
            cfg(kind, tariff_api.base_url, fixed_export_pence_per_kwh=15.0),
            db=db,
            http=http,
            clock=clock,
        )
        assert isinstance(tariff, FetchedTariff)
        assert await tariff.refresh() is True
    product, code = CODES[kind]
    seen = [r for r in tariff_api.requests if r.path == octopus_path(product, code)]
    assert len(seen) == 1 and seen[0].query["page_size"] == ["1500"]
    prices = tariff.prices(START, 96, 30)  # 48 h
    got = {i: round(prices.import_per_kwh[i], 6) for i in expected}
    assert got == pytest.approx(expected)
    assert prices.export_per_kwh == [0.15] * 96  # the fixed export tariff, 15 p/kWh
    if kind == "octopus_tracker":  # daily rows end 2026-11-29 00:00; no repeating a day
        assert prices.fallback_slots == 96 - at(29, 0)
        assert prices.notes[0].startswith("tariff.import: no price for 32 slots from 2026-11-29")
    else:
        assert prices.fallback_slots == 0 and prices.notes == ()


async def test_flux_exports_on_its_export_product(tariff_api: TariffApi, db) -> None:  # type: ignore[no-untyped-def]
    export = {
        "export_product_code": "FLUX-EXPORT-23-02-14",
        "export_tariff_code": "E-1R-FLUX-EXPORT-23-02-14-C",
    }
    async with httpx.AsyncClient() as http:
        tariff = build_tariff(
            cfg("octopus_flux", tariff_api.base_url, octopus=export), db=db, http=http,
            clock=AutoClock(NOW),
        )  # fmt: skip
        await tariff.refresh()
    p = tariff.prices(START, 72, 30)
    assert p.import_per_kwh[at(28, 17)] == pytest.approx(0.3898)
    assert p.export_per_kwh[at(28, 17)] == pytest.approx(0.283)  # Flux pays most at the peak
    assert p.export_per_kwh[at(28, 3)] == pytest.approx(0.0604)
    assert p.export_per_kwh[at(27, 20)] == pytest.approx(0.1717)
    rows = await db.fetchall("SELECT direction, count(*) FROM tariff_prices GROUP BY direction")
    assert {r[0] for r in rows} == {"import", "export"}


async def test_intelligent_go_off_peak_hours_are_configurable(tariff_api: TariffApi, db) -> None:  # type: ignore[no-untyped-def]
    c = cfg("octopus_intelligent_go", tariff_api.base_url,
            octopus={"off_peak_start": "00:30", "off_peak_end": "04:30"})  # fmt: skip
    async with httpx.AsyncClient() as http:
        tariff = build_tariff(c, db=db, http=http, clock=AutoClock(NOW))
        await tariff.refresh()
    p = tariff.prices(START, 72, 30).import_per_kwh
    assert p[at(28, 0)] == pytest.approx(0.2703) and p[at(28, 0, 30)] == pytest.approx(0.07)
    assert p[at(28, 4)] == pytest.approx(0.07) and p[at(28, 4, 30)] == pytest.approx(0.2703)


async def test_cached_prices_survive_a_restart_while_the_api_is_down(
    tariff_api: TariffApi, db
) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as http:
        await build_tariff(cfg("octopus_go", tariff_api.base_url), db=db, http=http,
                           clock=AutoClock(NOW)).refresh()  # fmt: skip
        tariff_api.down = True
        tariff = build_tariff(cfg("octopus_go", tariff_api.base_url, octopus={"retries": 0}),
                              db=db, http=http, clock=AutoClock(NOW))  # fmt: skip
        await tariff.load_cache()
        assert await tariff.refresh() is False
    p = tariff.prices(START, 72, 30)
    assert p.import_per_kwh[at(28, 1)] == pytest.approx(0.085)
    assert p.notes[0] == (
        "tariff: octopus GO-VAR-22-10-14 fetch failed (HTTP 503 after 1 attempts);"
        " last good prices kept"
    )


@pytest.mark.parametrize(
    ("octopus", "message"),
    [
        ({"product_code": "AGILE-24-10-01", "tariff_code": "E-1R-AGILE-24-10-01-C"},
         "kind 'octopus_go' needs a product code starting 'GO-'"),
        ({"tariff_code": "E-1R-GO-VAR-22-10-14-Q"}, "tariff_code"),  # region letters are A..P
        ({"tariff_code": "E-1R-GO-VAR-22-10-15-C"}, "is not E-1R-GO-VAR-22-10-14-<region A..P>"),
        ({"export_product_code": "AGILE-OUTGOING-19-05-13"}, "give both export codes or neither"),
        ({"export_product_code": "AGILE-OUTGOING-19-05-13",
          "export_tariff_code": "E-1R-AGILE-OUTGOING-19-05-13-H"}, "region letter differs"),
        ({"fetch_cron": "5 25 * * *"}, "'5 25 * * *' is not a crontab"),
        ({"fetch_cron": []}, "needs at least one crontab"),
    ],
)  # fmt: skip
def test_octopus_codes_are_validated(octopus: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        cfg("octopus_go", "http://127.0.0.1:1", octopus=octopus)


def test_flux_export_needs_the_flux_export_product() -> None:
    with pytest.raises(ValidationError, match="Flux export needs a code starting 'FLUX-EXPORT-'"):
        cfg("octopus_flux", "http://127.0.0.1:1",
            octopus={"export_product_code": "OUTGOING-FIX-12M-19-05-13",
                     "export_tariff_code": "E-1R-OUTGOING-FIX-12M-19-05-13-C"})  # fmt: skip


def test_fixed_export_cannot_double_an_export_source() -> None:
    with pytest.raises(ValidationError, match="already has an export price source"):
        cfg("octopus_flux", "http://127.0.0.1:1", fixed_export_pence_per_kwh=15,
            octopus={"export_product_code": "FLUX-EXPORT-23-02-14",
                     "export_tariff_code": "E-1R-FLUX-EXPORT-23-02-14-C"})  # fmt: skip


def test_daily_bands_repeat_by_uk_wall_clock_across_the_clock_change() -> None:
    from hems.planning.tariffs import Interval
    from hems.planning.tariffs.octopus import repeat_daily_price

    # Go on Saturday 24 Oct 2026 (BST, UTC+1): 00:30-04:30 local cheap, the rest peak.
    day = [
        Interval(utc(2026, 10, 23, 23, 0), utc(2026, 10, 23, 23, 30), 0.27),
        Interval(utc(2026, 10, 23, 23, 30), utc(2026, 10, 24, 3, 30), 0.085),
        Interval(utc(2026, 10, 24, 3, 30), utc(2026, 10, 24, 23, 0), 0.27),
    ]
    # Monday 00:15 GMT is 00:15 on the UK clock: peak, as on Saturday at 00:15 BST (a shift
    # of whole UTC days would land on 01:15 BST, inside the cheap band).
    slot = utc(2026, 10, 26, 0, 15)
    assert repeat_daily_price(day, slot, slot + timedelta(minutes=15)) == 0.27
    slot = utc(2026, 10, 26, 0, 30)  # 00:30 GMT: cheap from 00:30 local, as on Saturday
    assert repeat_daily_price(day, slot, slot + timedelta(minutes=30)) == 0.085
    late = utc(2026, 11, 5, 12, 0)  # more than 7 days on: unknown, never a guess
    assert repeat_daily_price(day, late, late + timedelta(minutes=30)) is None


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def go_reply(edit: tuple[str, str] | None = None, count: int | None = None) -> bytes:
    import json

    from tariff_server import DATA

    text = (DATA / "octopus_go_C.json").read_text()
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit, 1)
    if count is not None:
        doc = json.loads(text)
        doc["count"] = count
        text = json.dumps(doc)
    return text.encode()


BAD_GO = [
    (go_reply(('"value_inc_vat": 27.37', '"value_inc_vat": 2737')),
     "results[0].value_inc_vat: 2737 is not a p/kWh rate (wrong units?)"),
    (go_reply(('"valid_from": "2026-11-27T04:30:00Z"', '"valid_from": "2026-11-27T04:30:00"')),
     "results[0].valid_from: '2026-11-27T04:30:00' has no UTC offset (time zone unknown)"),
    (go_reply(count=40), "count: says 40 rows, got 7"),
    (b'{"count": 0, "next": null, "previous": null, "results": []}',
     "results: empty: no prices (wrong product or region?)"),
    (go_reply()[:300], "body: not JSON (a truncated reply?)"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), BAD_GO, ids=range(len(BAD_GO)))
async def test_octopus_bad_reply_is_named_and_last_good_kept(
    tariff_api: TariffApi, db, body, message
) -> None:  # type: ignore[no-untyped-def]
    product, code = CODES["octopus_go"]
    async with httpx.AsyncClient() as http:
        tariff = build_tariff(cfg("octopus_go", tariff_api.base_url), db=db, http=http,
                              clock=AutoClock(NOW))  # fmt: skip
        await tariff.refresh()
        good = tariff.prices(START, 96, 30).import_per_kwh
        tariff_api.overrides[octopus_path(product, code)] = (200, body)
        assert await tariff.refresh() is False
    assert tariff.last_error == message
    after = tariff.prices(START, 96, 30)
    assert after.import_per_kwh == good
    assert (
        after.notes[0]
        == f"tariff: octopus {product} fetch failed ({message}); last good prices kept"
    )


async def test_agile_rows_must_be_half_hours(tariff_api: TariffApi, db) -> None:  # type: ignore[no-untyped-def]
    # A Go reply served for an Agile code: a wrong product code, refused by the row length.
    agile = octopus_path("AGILE-24-10-01", "E-1R-AGILE-24-10-01-C")
    tariff_api.overrides[agile] = (200, go_reply())
    c = TariffConfig.model_validate(
        {"kind": "octopus_agile", "octopus": {"base_url": tariff_api.base_url}}
    )
    async with httpx.AsyncClient() as http:
        tariff = build_tariff(c, db=db, http=http, clock=AutoClock(NOW))
        await tariff.refresh()
    assert tariff.last_error == "results[0]: 20 h long; Agile rows are 0.5 h"
