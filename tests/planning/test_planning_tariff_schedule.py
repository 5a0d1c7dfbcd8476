"""Fetch times: each source's crontabs through APScheduler's own trigger computation, in the
site's zone, a retry after a failure, and the planner honouring them on an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from tariff_server import TariffApi, octopus_path

from hems.core.clock import ManualClock
from hems.core.plan import Plan
from hems.core.site import LimitsConfig, SiteConfig
from hems.core.state import SiteState
from hems.planning.config import OctopusConfig, PlannerConfig
from hems.planning.service import PlannerService
from hems.planning.tariffs import FetchSchedule
from hems.store.db import Database

LONDON = ZoneInfo("Europe/London")
GO = octopus_path("GO-VAR-22-10-14", "E-1R-GO-VAR-22-10-14-C")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


AGILE = FetchSchedule(OctopusConfig(), LONDON)  # "5 * * * *" and "*/10 16-19 * * *"
TABLE = [
    # now (UTC), failed, next fetch (UTC)
    (utc(2026, 11, 27, 15, 59), False, utc(2026, 11, 27, 16, 0)),  # GMT: 16:00 local
    (utc(2026, 11, 27, 16, 0), False, utc(2026, 11, 27, 16, 5)),  # one fire time runs once
    (utc(2026, 11, 27, 19, 55), False, utc(2026, 11, 27, 20, 5)),  # after 19:50: hourly again
    (utc(2026, 11, 27, 3, 7), False, utc(2026, 11, 27, 4, 5)),
    (utc(2026, 6, 1, 14, 59), False, utc(2026, 6, 1, 15, 0)),  # BST: 16:00 local = 15:00 UTC
    (utc(2026, 6, 1, 13, 6), False, utc(2026, 6, 1, 14, 5)),
    (utc(2026, 11, 27, 20, 6), True, utc(2026, 11, 27, 20, 11)),  # failed: retry in 300 s
    (utc(2026, 11, 27, 16, 8), True, utc(2026, 11, 27, 16, 10)),  # ...unless cron is sooner
]


@pytest.mark.parametrize(("now", "failed", "expected"), TABLE)
def test_agile_fetch_times_follow_the_crontabs_in_uk_time(now, failed, expected) -> None:  # type: ignore[no-untyped-def]
    assert AGILE.next_after(now, failed=failed) == expected


def test_crontab_is_read_in_the_site_zone() -> None:
    cfg = OctopusConfig(fetch_cron="0 13 * * *")  # one string is one crontab
    assert cfg.fetch_cron == ["0 13 * * *"]
    now = utc(2026, 11, 27, 6, 0)
    assert FetchSchedule(cfg, ZoneInfo("Europe/Oslo")).next_after(now, failed=False) == utc(
        2026, 11, 27, 12, 0
    )
    assert FetchSchedule(cfg, LONDON).next_after(now, failed=False) == utc(2026, 11, 27, 13, 0)


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await Database.open(tmp_path / "hems.db")
    yield database
    await database.close()


async def settle() -> None:
    """Let the planner loop start its sleep (one loop turn) before the clock moves."""
    for _ in range(20):
        await asyncio.sleep(0)


async def wait_for(predicate) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(5):  # a safety net: the HTTP server answers from a thread
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_planner_fetches_at_the_cron_time_and_retries_after_an_outage(
    tariff_api: TariffApi,
    replay,
    db,  # type: ignore[no-untyped-def]
) -> None:
    cfg = PlannerConfig.model_validate(
        {
            "enabled": True,
            "horizon_h": 24,
            "tariff": {
                "kind": "octopus_go",
                "octopus": {
                    "base_url": tariff_api.base_url,
                    "product_code": "GO-VAR-22-10-14",
                    "tariff_code": "E-1R-GO-VAR-22-10-14-C",
                    "fetch_cron": "40 16 * * *",
                    "retries": 0,
                    "retry_after_s": 60,
                },
            },
            "forecast": {"base_url": replay.base_url, "arrays": [{"kwp": 4.0}]},
            # No check interval or slot boundary falls at 16:40: only the fetch wakes the loop.
            "replan": {"min_interval_s": 0, "check_interval_s": 900},
        }
    )
    clock = ManualClock(utc(2026, 11, 27, 16, 5))
    plans: asyncio.Queue[Plan] = asyncio.Queue()
    async with httpx.AsyncClient() as http:
        svc = PlannerService(cfg, LimitsConfig(), SiteState(clock), db, clock, http,
                             site=SiteConfig(id="t", timezone="Europe/London"))  # fmt: skip
        svc.subscribe(plans.put_nowait)
        task = asyncio.create_task(svc.run())
        try:
            first = await asyncio.wait_for(plans.get(), 10)
            assert tariff_api.count(GO) == 1
            assert not any(n.startswith("tariff") for n in first.notes)
            assert svc.next_tariff_fetch == utc(2026, 11, 27, 16, 40)
            await settle()
            await clock.advance(35 * 60 - 1)  # 16:39:59
            await asyncio.sleep(0.05)
            assert tariff_api.count(GO) == 1
            tariff_api.down = True
            await clock.advance(1)  # 16:40:00
            await wait_for(lambda: tariff_api.count(GO) == 2)
            # The failure is a notice on the next plan; the last good prices stay.
            await wait_for(lambda: svc.next_tariff_fetch == utc(2026, 11, 27, 16, 41))
            while (plan := await asyncio.wait_for(plans.get(), 10)).created_at < utc(
                2026, 11, 27, 16, 40
            ):
                pass
            assert plan.notes[0] == (
                "tariff: octopus GO-VAR-22-10-14 fetch failed (HTTP 503 after 1 attempts);"
                " last good prices kept"
            )
            problem = svc.last_problem
            assert problem is not None and min(problem.import_price_per_kwh) == pytest.approx(0.085)
            tariff_api.down = False
            await settle()
            await clock.advance(60)  # 16:41: the retry, not tomorrow's 16:40
            await wait_for(lambda: tariff_api.count(GO) == 3)
            await wait_for(lambda: svc.next_tariff_fetch == utc(2026, 11, 28, 16, 40))
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
