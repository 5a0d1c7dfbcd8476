"""Rolling-horizon service: real SQLite, Agile replayed over local HTTP, a manual clock."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from hems.core.clock import ManualClock
from hems.core.flex import FlexInstruction
from hems.core.plan import Plan
from hems.core.readings import Quantity, Reading, Role
from hems.core.site import LimitsConfig, SiteConfig
from hems.core.state import SiteState
from hems.planning.config import (
    BatteryPlanConfig,
    DeferrableLoadConfig,
    EvPlanConfig,
    PlannerConfig,
)
from hems.planning.optimiser import optimise
from hems.planning.planio import plan_from_dict
from hems.planning.problem import Problem
from hems.planning.service import PlannerService, load_window
from hems.planning.store import stored_json
from hems.store.db import Database

NOW = datetime(2026, 11, 27, 16, 5, tzinfo=UTC)


def planner_cfg(base_url: str) -> PlannerConfig:
    return PlannerConfig.model_validate(
        {
            "enabled": True,
            "horizon_h": 24,
            "step_min": 30,
            "tariff": {
                "kind": "octopus_agile",
                "octopus": {
                    "base_url": base_url,
                    "backoff_s": 0,
                    "export_product_code": "AGILE-OUTGOING-19-05-13",
                    "export_tariff_code": "E-1R-AGILE-OUTGOING-19-05-13-C",
                },
            },
            "forecast": {"base_url": base_url, "arrays": [{"kwp": 4.0}]},
            "replan": {"min_interval_s": 0, "check_interval_s": 60},
        }
    ).with_assets(
        batteries=[BatteryPlanConfig(device_id="house-battery", capacity_wh=9500,
                                     max_charge_w=3600, max_discharge_w=3600)],
        evs=[EvPlanConfig(charger_id="wallbox", default_departure="07:00",
                          target_energy_wh=20000, phases=1)],
        loads=[DeferrableLoadConfig(device_id="dishwasher", power_w=1800, run_time_min=120,
                                    window_start="20:00", window_end="07:00", contiguous=True)],
    )  # fmt: skip


async def next_plan(queue: asyncio.Queue[Plan]) -> Plan:
    async with asyncio.timeout(10):
        return await queue.get()


@contextlib.asynccontextmanager
async def planner_running(replay, db, *, ev_plugged: bool, soc_pct: float | None = 40.0):  # type: ignore[no-untyped-def]
    """A running PlannerService on a manual clock; yields (svc, plans, clock, state).
    `soc_pct` None: the battery has not answered yet."""
    clock = ManualClock(NOW)
    state = SiteState(clock, stale_after_s=3600)
    state.register_device("house-battery", Role.BATTERY)
    if soc_pct is not None:
        state.publish([Reading("house-battery", Quantity.SOC_PCT, soc_pct, NOW)])
    limits = LimitsConfig(fuse_a=60, export_limit_w=3680, battery_reserve_pct=10)
    seen: asyncio.Queue[Plan] = asyncio.Queue()
    async with httpx.AsyncClient() as http:
        svc = PlannerService(planner_cfg(replay.base_url), limits, state, db, clock, http,
                             site=SiteConfig(id="demo", timezone="Europe/London"))  # fmt: skip
        svc.subscribe(seen.put_nowait)
        if ev_plugged:
            svc.ev_plugged("wallbox")
        task = asyncio.create_task(svc.run())
        try:
            yield svc, seen, clock, state
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await Database.open(tmp_path / "hems.db")
    yield database
    await database.close()


async def test_rolling_horizon_plans_stores_and_replans(replay, db) -> None:  # type: ignore[no-untyped-def]
    async with planner_running(replay, db, ev_plugged=True) as (svc, seen, clock, state):
        plan = await next_plan(seen)
        assert plan is svc.current_plan and plan.status == "optimal"
        first = plan.slots[0]
        assert first.start == datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
        assert set(first.targets_w) == {"house-battery", "wallbox", "dishwasher"}
        # The evening peak (16–19 h) is never where the car charges.
        assert all(s.targets_w["wallbox"] == 0 for s in plan.slots[:6])
        ev_kwh = sum(s.targets_w["wallbox"] for s in plan.slots) * 0.5 / 1000
        assert ev_kwh == pytest.approx(20.0, abs=0.01)
        dish = [s.switches["dishwasher"] for s in plan.slots]
        assert sum(dish) == 4 and "TrueTrueTrueTrue" in "".join(map(str, dish))

        # The stored problem reproduces the plan.
        row = await db.fetchone(
            "SELECT reason, problem_json, plan_json FROM plans ORDER BY plan_pk DESC"
        )
        assert row is not None and "start" in row[0]
        again = optimise(Problem.model_validate_json(stored_json(row[1])))
        assert again.plan.cost == pytest.approx(plan.cost, abs=1e-3)
        assert plan_from_dict(__import__("json").loads(stored_json(row[2]))).slots == plan.slots

        # A slot boundary brings a new plan starting at the new slot.
        await clock.advance(30 * 60)
        p = await next_plan(seen)
        assert p.slots[0].start == datetime(2026, 11, 27, 16, 30, tzinfo=UTC)

        # An accepted flex event: no import 17:00–18:00.
        svc.set_flex_instructions([FlexInstruction(
            event_id="ev-1", modification=0, start=datetime(2026, 11, 27, 17, 0, tzinfo=UTC),
            end=datetime(2026, 11, 27, 18, 0, tzinfo=UTC), import_cap_w=0,
        )])  # fmt: skip
        p = await next_plan(seen)
        for s in p.slots[1:3]:
            assert s.grid_import_w == 0

        # Measured PV far above the forecast (it is dark) triggers a replan.
        state.register_device("pv", Role.PV)
        state.publish([Reading("pv", Quantity.POWER_W, 2500.0, clock.now())])
        await clock.advance(61)
        await clock.advance(61)  # the loop may have begun its 60 s sleep after the first
        await next_plan(seen)
        last = await db.fetchone("SELECT reason FROM plans ORDER BY plan_pk DESC")
        assert last is not None and "pv forecast off by 2500 W" in last[0]


async def test_a_battery_read_after_the_first_plan_is_planned_at_once(replay, db) -> None:  # type: ignore[no-untyped-def]
    """The first plan comes before the battery's first poll: it is left out with a note, and
    its first SoC brings a replan with it (not the next slot boundary, up to 30 min away)."""
    async with planner_running(replay, db, ev_plugged=False, soc_pct=None) as (
        svc,
        seen,
        clock,
        state,
    ):
        first = await next_plan(seen)
        assert "house-battery" not in first.slots[0].soc_pct
        assert any("house-battery: SoC unknown" in n for n in first.notes)
        state.publish([Reading("house-battery", Quantity.SOC_PCT, 55.0, clock.now())])
        await clock.advance(61)
        await clock.advance(61)  # the loop may have begun its 60 s sleep after the first
        p = await next_plan(seen)
        assert p.slots[0].start == first.slots[0].start  # no boundary passed: the SoC did it
        assert "house-battery" in p.slots[0].soc_pct
        assert svc.last_problem is not None
        assert [b.initial_soc_pct for b in svc.last_problem.batteries] == [55.0]
        last = await db.fetchone("SELECT reason FROM plans ORDER BY plan_pk DESC")
        assert last is not None and "battery house-battery SoC known" in last[0]
        await clock.advance(61)
        assert seen.empty()  # once, not every check


async def test_a_replan_asked_for_while_a_plan_is_made_follows_at_once(replay, db) -> None:  # type: ignore[no-untyped-def]
    """An owner's change that arrives while a solve runs (here: from the plan listener, so
    during `plan_once`) is planned right after it, not at the next check (60 s later)."""
    async with planner_running(replay, db, ev_plugged=False) as (svc, seen, _clock, _state):
        asked: list[str] = []

        def ask_once(_: Plan) -> None:
            if not asked:
                asked.append("x")
                svc.request_replan("owner changed the session")

        svc.subscribe(ask_once)
        await next_plan(seen)
        second = await next_plan(seen)  # the clock does not move: only the request can do it
        assert second is not None
        last = await db.fetchone("SELECT reason FROM plans ORDER BY plan_pk DESC")
        assert last is not None and last[0] == "owner changed the session"


async def test_impossible_event_is_left_out_and_named(replay, db) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock(NOW)
    state = SiteState(clock, stale_after_s=3600)  # battery SoC unknown: not planned
    limits = LimitsConfig()
    async with httpx.AsyncClient() as http:
        svc = PlannerService(planner_cfg(replay.base_url), limits, state, db, clock, http)
        svc.set_flex_instructions([FlexInstruction(
            event_id="turn-up", modification=0, start=NOW, end=NOW + timedelta(hours=1),
            export_floor_w=5000,
        )])  # fmt: skip
        await db.execute(
            "INSERT INTO plans(created_at_ms, reason, status, problem_json) VALUES (0, 'old',"
            " 'optimal', '{}')"
        )
        await db.execute(
            "INSERT INTO forecasts(kind, made_at_ms, start_ms, step_s, values_json, source)"
            " VALUES ('pv', 0, 0, 1800, '[]', 'default')"
        )
        plan = await svc.plan_once("test")
        # Issue 16: the retention runs once an hour, not at every replan (each delete is a
        # commit that would take the replan's queued plan and forecasts along at once).
        db.defer_max_s = 3600.0
        await db.flush_deferred()
        await clock.advance(600)
        await svc.plan_once("again")
        assert db.deferred >= 1
        other = sqlite3.connect(str(db.path))
        try:
            reasons = [r[0] for r in other.execute("SELECT reason FROM plans")]
        finally:
            other.close()
        assert reasons == ["test"]
        await db.execute("DELETE FROM plans WHERE reason = 'again'")
    assert plan is not None
    # Retention: plans older than retention_days (14) are gone, the new one is stored.
    rows = await db.fetchall("SELECT reason FROM plans")
    assert [r[0] for r in rows] == ["test"]
    # And so are old forecasts (pruned by their owner, hems.planning.forecast).
    made = await db.fetchall("SELECT made_at_ms FROM forecasts")
    assert len(made) == 2 and all(r[0] > 0 for r in made)
    assert any(
        # The event starts 16:05, so the first slot fully inside it is 16:30.
        n.startswith("events[0].export_floor_w: at 16:30 needs 5000 W net export but export")
        and n.endswith("(left out of this plan)")
        for n in plan.notes
    )
    assert "batteries[0] house-battery: SoC unknown (stale); not planned" in plan.notes
    assert "house-battery" not in plan.slots[0].targets_w
    # Offline tariff (never fetched here): fallback prices, flagged on the plan.
    assert plan.notes[0].startswith("tariff.import: no price for 48 slots from 2026-11-27 16:00")


def test_load_window_wraps_midnight() -> None:
    from zoneinfo import ZoneInfo

    cfg = planner_cfg("http://x").loads[0]
    z = ZoneInfo("Europe/London")
    assert load_window(cfg, NOW, z) == (
        datetime(2026, 11, 27, 20, 0, tzinfo=UTC),
        datetime(2026, 11, 28, 7, 0, tzinfo=UTC),
    )
    inside = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    assert load_window(cfg, inside, z)[0] == datetime(2026, 11, 27, 20, 0, tzinfo=UTC)


async def test_tariff_fetches_at_its_crontab_times(replay, db) -> None:  # type: ignore[no-untyped-def]
    # Agile's default crontabs: hourly at :05, and every 10 min from 16:00 to 19:50 UK time.
    clock = ManualClock(datetime(2026, 11, 28, 16, 5, tzinfo=UTC))
    state = SiteState(clock)
    seen: asyncio.Queue[Plan] = asyncio.Queue()

    def agile_fetches() -> int:
        return sum("AGILE-24-10-01/" in r and "page=2" not in r for r in replay.requests)

    async with httpx.AsyncClient() as http:
        svc = PlannerService(planner_cfg(replay.base_url), LimitsConfig(), state, db, clock, http)
        svc.subscribe(seen.put_nowait)
        task = asyncio.create_task(svc.run())
        try:
            await next_plan(seen)
            assert agile_fetches() == 1  # at start
            assert svc.next_tariff_fetch == datetime(2026, 11, 28, 16, 10, tzinfo=UTC)
            for _ in range(20):  # let the loop start its sleep before time moves
                await asyncio.sleep(0)
            await clock.advance(299)  # 16:09:59
            await asyncio.sleep(0.05)
            assert agile_fetches() == 1
            await clock.advance(1)  # 16:10:00, without a check interval or slot boundary due
            async with asyncio.timeout(5):
                while agile_fetches() < 2:  # noqa: ASYNC110 (the HTTP server runs in a thread)
                    await asyncio.sleep(0.01)
                while svc.next_tariff_fetch != datetime(2026, 11, 28, 16, 20, tzinfo=UTC):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_load_forecast_above_the_fuse_is_clipped_not_fatal(replay, db) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock(NOW)
    limits = LimitsConfig(fuse_a=1)  # 230 W, below the default 400 W base load
    cfg = planner_cfg(replay.base_url)
    cfg = cfg.with_assets(batteries=cfg.batteries)
    async with httpx.AsyncClient() as http:
        svc = PlannerService(cfg, limits, SiteState(clock), db, clock, http)
        plan = await svc.plan_once("test")
    assert plan is not None
    # Daylight slots where PV covers the rest are not clipped: 35 of 48 are.
    assert "load: forecast above the import limit in 35 slots from 16:00; clipped" in plan.notes
    assert all(s.grid_import_w <= 230 + 1e-6 for s in plan.slots)


async def test_aggregator_envelope_tightens_grid_caps_per_slot(replay, db) -> None:  # type: ignore[no-untyped-def]
    from hems.planning.service import Envelope, EnvelopeInterval

    async with planner_running(replay, db, ev_plugged=True) as (svc, seen, _clock, _state):
        await next_plan(seen)
        t0 = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
        svc.set_envelope(
            Envelope(
                default_import_w=9000.0,  # tighter than the 13.8 kW fuse all day
                intervals=(EnvelopeInterval(t0, t0 + timedelta(hours=2), import_w=1500.0),),
            )
        )
        p = await next_plan(seen)
        problem = svc.last_problem
        assert problem is not None and isinstance(problem.import_cap_w, list)
        caps = dict(zip([s.start for s in p.slots], problem.import_cap_w, strict=False))
        assert caps[t0] == 1500.0 and caps[t0 + timedelta(minutes=90)] == 1500.0
        assert caps[t0 + timedelta(hours=2)] == 9000.0
        assert caps[datetime(2026, 11, 27, 16, 0, tzinfo=UTC)] == 9000.0
        for s in p.slots:
            assert s.grid_import_w <= caps[s.start] + 1e-6
        assert problem.export_cap_w == [3680.0] * len(p.slots)  # the site's own limit


async def test_price_event_steers_the_plan_and_is_withdrawn_on_cancel(replay, db) -> None:  # type: ignore[no-untyped-def]
    from hems.app.links import FlexLink
    from hems.flex.events import FlexEvent, instruction_for

    async with planner_running(replay, db, ev_plugged=False) as (svc, seen, clock, _state):
        link = FlexLink(clock, svc, None)
        first = await next_plan(seen)
        t0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
        event = FlexEvent(event_id="price-1", modification_number=1, kind="turn_up",
                          start=t0, end=t0 + timedelta(hours=1), price_per_kwh=-0.5,
                          currency="GBP")  # fmt: skip
        await link.on_change([i for i in [instruction_for(event)] if i is not None])
        p = await next_plan(seen)
        prices = {s.start: s.price_import_per_kwh for s in p.slots}
        assert prices[t0] == -0.5 and prices[t0 + timedelta(minutes=30)] == -0.5
        before = {s.start: s.price_import_per_kwh for s in first.slots}
        assert prices[t0 + timedelta(hours=1)] == before[t0 + timedelta(hours=1)]
        # Paid to import: the plan imports in that hour (battery or car take it).
        assert all(s.grid_import_w > 0 for s in p.slots if t0 <= s.start < t0 + timedelta(hours=1))

        cancelled = FlexEvent(event_id="price-1", modification_number=2, kind="turn_up",
                              start=t0, end=t0 + timedelta(hours=1), cancelled=True,
                              price_per_kwh=-0.5)  # fmt: skip
        assert instruction_for(cancelled) is None  # a cancellation withdraws the price
        await link.on_change([])
        p = await next_plan(seen)
        assert {s.start: s.price_import_per_kwh for s in p.slots}[t0] == before[t0]


async def test_forecast_accuracy_is_in_the_plan_notes_and_status(replay, db) -> None:  # type: ignore[no-untyped-def]
    from planning_helpers import put_history

    from hems.planning.forecast import Forecast, store_forecast

    clock = ManualClock(NOW)
    state = SiteState(clock, stale_after_s=3600)
    state.register_device("roof", Role.PV)  # the PV meter, found in the state
    # Yesterday's plan forecast 300 W of PV for 24 h; the meter measured 100 W throughout.
    made = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)
    await store_forecast(db, "pv", made, Forecast(made, 30, [300.0] * 48, "open-meteo"))
    await put_history(db, "roof", {made + timedelta(minutes=30 * i): 100.0 for i in range(48)})
    async with httpx.AsyncClient() as http:
        svc = PlannerService(planner_cfg(replay.base_url), LimitsConfig(), state, db, clock, http)
        plan = await svc.plan_once("test")
    assert plan is not None
    # 16:00 26 Nov .. 16:00 27 Nov: 48 half-hours, |300 - 100| each, over two local days.
    assert "pv: forecast mean absolute error 200 W per half-hour over 2 days (48 half-hours)" in (
        plan.notes
    )
    assert "load: no forecast accuracy yet (no stored forecast with measurements)" in plan.notes
    status = svc.forecast_status()
    assert status["accuracy"]["pv"]["mae_w"] == 200.0 and status["accuracy"]["pv"]["unit"] == "W"
    assert [d["slots"] for d in status["accuracy"]["pv"]["daily"]] == [16, 32]
    assert status["pv_calibration"] is None  # no forecast.pv_device_ids to learn from
