"""Deferrable-load run time counted from metering: the energy register at both ends of a
slot, at the load's rated power; the plan's switch only when the register is unknown."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from hems.core.clock import ManualClock
from hems.core.readings import Quantity, Reading, Role
from hems.core.site import LimitsConfig, SiteConfig
from hems.core.state import SiteState
from hems.planning.config import DeferrableLoadConfig, PlannerConfig
from hems.planning.service import PlannerService, load_window, metered_run_min
from hems.store.db import Database

T0 = datetime(2026, 11, 27, 20, 0, 5, tzinfo=UTC)  # 20:00 London (GMT): the window is open
LOAD = DeferrableLoadConfig(
    device_id="dishwasher", power_w=1800, run_time_min=120, window_start="20:00",
    window_end="07:00",
)  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "minutes"),
    [
        (1000.0, 1600.0, 20.0),  # 600 Wh at 1800 W
        (1000.0, 1000.0, 0.0),  # off all slot, whatever the plan said
        (1000.0, 3000.0, 30.0),  # more than the rated power: at most the slot
        (None, 1600.0, None),  # unknown at the start: the plan decides
        (1000.0, None, None),
        (1600.0, 10.0, None),  # register reset
    ],
)
def test_metered_run_min(before: float | None, after: float | None, minutes: float | None) -> None:
    assert metered_run_min(before, after, 1800.0, 30) == minutes


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await Database.open(tmp_path / "hems.db")
    yield database
    await database.close()


async def test_run_time_owed_shrinks_by_what_the_meter_saw(db: Database) -> None:
    clock = ManualClock(T0)
    state = SiteState(clock, stale_after_s=3600)
    state.register_device("dishwasher", Role.LOAD)
    cfg = PlannerConfig(step_min=30).with_assets(loads=[LOAD])
    async with httpx.AsyncClient() as http:
        svc = PlannerService(
            cfg,
            LimitsConfig(fuse_a=60, export_limit_w=3680),
            state,
            db,
            clock,
            http,
            site=SiteConfig(id="demo", timezone="Europe/London"),
        )
        key = ("dishwasher", load_window(LOAD, T0, svc.zone)[0])
        state.publish([Reading("dishwasher", Quantity.ENERGY_IMPORT_WH, 1000.0, clock.now())])
        svc._check_slot_boundary()  # first look: the register is remembered
        await clock.advance(30 * 60)
        state.publish([Reading("dishwasher", Quantity.ENERGY_IMPORT_WH, 1600.0, clock.now())])
        svc._check_slot_boundary()  # no plan at all: the meter alone counts
        assert svc._load_done_min[key] == pytest.approx(20.0)
        await clock.advance(30 * 60)
        state.publish([Reading("dishwasher", Quantity.ENERGY_IMPORT_WH, 1600.0, clock.now())])
        svc._check_slot_boundary()  # off for the whole slot
        assert svc._load_done_min[key] == pytest.approx(20.0)
