"""Events: policy (clamp / opt out), modification replacement in SQLite, offers, the service."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from flexdata import build_data

from hems.core.clock import ManualClock
from hems.core.flex import FlexInstruction
from hems.flex.calendar import WorkingDayCalendar
from hems.flex.config import FlexConfig, PolicyConfig
from hems.flex.events import (
    EventBook,
    EventError,
    Feasibility,
    FlexEvent,
    build_offers,
    evaluate,
    instruction_for,
    supersedes,
)
from hems.flex.service import FlexService
from hems.planning.flex import add_cap, add_floor
from hems.planning.optimiser import optimise
from hems.planning.problem import BatterySpec, Problem
from hems.store.db import Database
from tests.testlib import wait_until

T0 = datetime(2024, 1, 31, 10, tzinfo=UTC)
START = datetime(2024, 1, 31, 17, tzinfo=UTC)
END = datetime(2024, 1, 31, 18, tzinfo=UTC)


def ev(mod: int = 0, **kw) -> FlexEvent:
    base = dict(event_id="dfs-42", modification_number=mod, kind="turn_down",
                start=START.isoformat(), end=END.isoformat(), import_cap_w=1000.0)  # fmt: skip
    base.update(kw)
    return FlexEvent.from_mapping(base)


def decide(event: FlexEvent, feasibility: Feasibility | None = None, **policy):
    return evaluate(
        event, PolicyConfig(**policy), now=T0, import_limit_w=13800.0, export_limit_w=3680.0,
        feasibility=feasibility,
    )  # fmt: skip


# -- policy -------------------------------------------------------------------------------------


def test_safe_event_is_accepted_unchanged() -> None:
    d = decide(ev())
    assert d.status == "accepted" and d.clamped == {} and d.reason is None
    assert d.effective == ev()


def test_unsafe_instructions_are_clamped_and_said_so() -> None:
    d = decide(ev(import_cap_w=100.0))
    assert d.status == "accepted"
    assert d.clamped == {"import_cap_w": 500.0}
    assert d.effective.import_cap_w == 500.0
    assert "import_cap_w 100 W clamped to 500 W (minimum the home needs)" in d.reason
    d = decide(ev(kind="turn_up", import_cap_w=None, export_floor_w=9000.0))
    assert d.clamped == {"export_floor_w": 3680.0}
    assert "export limit" in d.reason
    d = decide(ev(import_cap_w=None, setpoint_w=20000.0), max_import_cap_w=10000.0)
    assert d.clamped == {"setpoint_w": 10000.0}


def test_opt_outs() -> None:
    too_long = ev(end=(START + timedelta(hours=5)).isoformat())
    d = decide(too_long)
    assert d.status == "opted_out" and "exceeds max_event_duration_h 4" in d.reason
    d = decide(ev(), Feasibility(ev_target_reachable=False))
    assert d.status == "opted_out" and "EV could not be charged" in d.reason
    d = decide(
        ev(), Feasibility(ev_target_reachable=False), opt_out_if_ev_cannot_reach_target=False
    )
    assert d.status == "accepted"
    d = decide(ev(), Feasibility(min_battery_soc_pct=8.0, battery_reserve_pct=20.0))
    assert d.status == "opted_out" and "below its reserve 20 %" in d.reason
    d = decide(ev(start="2024-01-31T08:00:00+00:00", end="2024-01-31T09:00:00+00:00"))
    assert d.status == "opted_out" and "already ended" in d.reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"end": "2024-01-31T16:00:00+00:00"}, "event.end: must be after start"),
        ({"start": "2024-01-31T17:00:00"}, "event.start: must be an ISO 8601 time with offset"),
        ({"kind": "sideways"}, "event.kind: must be turn_down or turn_up"),
        ({"modification_number": -1}, "event.modification_number: must be an integer >= 0"),
        ({"import_cap_w": "lots"}, "event.import_cap_w: must be a finite number"),
    ],
)
def test_malformed_events_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(EventError, match=message):
        ev(**change)


def test_instructions() -> None:
    c = instruction_for(ev(3, import_cap_w=None, setpoint_w=-1500.0))
    assert c is not None and c.event_id == "dfs-42" and c.modification == 3
    assert c.export_floor_w == 1500.0 and c.import_cap_w is None and c.kind == "export-floor"
    c = instruction_for(ev(3, import_cap_w=800.0, setpoint_w=1200.0))
    assert c is not None and c.import_cap_w == 800.0 and c.start == START and c.end == END
    price = instruction_for(ev(3, import_cap_w=None, price_per_kwh=3.0))
    assert price is not None and price.power_free and price.price_per_kwh == 3.0
    assert price.kind == "price"
    assert instruction_for(ev(3, cancelled=True)) is None
    assert instruction_for(ev(3, import_cap_w=None)) is None  # asks for nothing


def test_modification_rule() -> None:
    assert supersedes(0, None) and supersedes(3, 2)
    assert not supersedes(2, 2) and not supersedes(1, 2)


# -- event book ---------------------------------------------------------------------------------


async def test_higher_modification_replaces_lower(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    try:
        book = EventBook(db)
        assert await book.record(ev(0), decide(ev(0)), T0)
        assert await book.record(ev(2, import_cap_w=800.0), decide(ev(2, import_cap_w=800.0)), T0)
        # a lower or equal modification arriving late changes nothing
        assert not await book.record(ev(1, import_cap_w=5.0), decide(ev(1)), T0)
        assert not await book.record(ev(2), decide(ev(2)), T0)
        cur = await book.current("dfs-42")
        assert cur is not None and cur.event.modification_number == 2
        assert cur.event.import_cap_w == 800.0 and cur.status == "accepted"
        rows = await db.fetchall(
            "SELECT modification_number, status FROM flex_events ORDER BY modification_number"
        )
        assert [tuple(r) for r in rows] == [(0, "superseded"), (2, "accepted")]
        assert [e.modification_number for e in await book.accepted(ending_after=T0)] == [2]
        # a cancellation is a modification too
        cancel = ev(3, cancelled=True)
        assert await book.record(cancel, decide(cancel), T0)
        assert await book.accepted(ending_after=T0) == []
        assert (await book.current("dfs-42")).status == "cancelled"
    finally:
        await db.close()


# -- offers with the real optimiser -------------------------------------------------------------


def test_offers_from_re_solving_the_plan() -> None:
    problem = Problem(
        start=datetime(2024, 1, 31, 16, tzinfo=UTC), step_min=30,
        import_price_per_kwh=[0.2, 0.3, 0.4, 0.3, 0.2, 0.2], export_price_per_kwh=[0.05] * 6,
        load_w=2000.0,
        batteries=[BatterySpec(id="bat", capacity_wh=4000, initial_soc_pct=50,
                               max_charge_w=3000, max_discharge_w=3000)],
    )  # fmt: skip
    base = optimise(problem)
    expected = {s.start: s.grid_import_w for s in base.plan.slots}
    first = problem.start  # planned import 5000 W (the battery charges in the cheap slot)
    periods = [(first, first + timedelta(minutes=30))]
    offers = build_offers(
        problem, expected, periods, lambda p: optimise(p).objective, [1000.0, 3000.0, 6000.0],
        add_cap, add_floor=add_floor,
    )  # fmt: skip
    o = offers[0]
    assert expected[first] == pytest.approx(5000.0)
    # 6000 W is more than the planned import: the largest feasible step is 3000 W
    assert o.turn_down_w == 3000.0
    # turning down means charging less now and buying later at a higher price: it costs > 0
    assert o.turn_down_cost is not None and o.turn_down_cost > 0
    assert json.loads(json.dumps(o.to_json()))["turn_down_w"] == 3000.0


# -- the service, end to end on a SQLite file ---------------------------------------------------


async def write_meter(
    db: Database,
    until: datetime,
    event_import_wh: float | None,
    estimated_at: datetime | None = None,
) -> None:
    """Rows as the meter area writes them into `meter_intervals` (migration 0002)."""
    cal = WorkingDayCalendar()
    d = build_data(
        date(2023, 11, 25), date(2024, 1, 31),
        lambda day, t: 0.5 if cal.is_working_day(day) else 2.0,
    )  # fmt: skip
    rows = []
    for t, kwh in d.import_kwh.items():
        if t >= until:
            continue
        wh: float | None = kwh * 1000
        quality = "estimated" if t == estimated_at else "actual"
        if START <= t < END:
            wh = event_import_wh
            quality = "actual" if wh is not None else "missing"
        exp = 0.0 if wh is not None else None
        rows.append(("smart-meter", int(t.timestamp() * 1000), wh, exp, quality, 0))
    await db.executemany(
        "INSERT OR REPLACE INTO meter_intervals(device_id, period_start_ms, import_wh,"
        " export_wh, quality, updated_ms) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


async def test_service_answers_event_and_sends_report_once(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0)
    sent: list[tuple[str, dict]] = []

    async def send(type_: str, payload: dict) -> None:
        sent.append((type_, payload))

    changes: list[list[FlexInstruction]] = []
    cfg = FlexConfig(enabled=True, meter_device_id="smart-meter", report_delay_s=1800,
                     check_interval_s=600)  # fmt: skip
    flex = FlexService(cfg, "Europe/London", db, clock, send, import_limit_w=13800.0,
                       export_limit_w=3680.0, on_change=changes.append)  # fmt: skip
    try:
        decision = await flex.on_event(ev(0, import_cap_w=100.0))
        assert decision.status == "accepted" and decision.clamped == {"import_cap_w": 500.0}
        assert [e.import_cap_w for e in changes[-1]] == [500.0]
        stale = await flex.on_event(ev(0))
        assert stale.status == "outdated" and stale.stored_modification == 0
        assert stale.reason == "modification 0 is not above 0"

        task = asyncio.create_task(flex.run())
        # meter data so far: history only; the event window is still missing
        await write_meter(db, START, None)
        await clock.advance(9 * 3600)  # 19:00, past end + delay: window data not there yet
        await asyncio.sleep(0.05)
        assert sent == []
        await write_meter(db, END, 200.0)  # 0.2 kWh in each event period
        await clock.advance(600)
        for _ in range(50):
            if sent:
                break
            await asyncio.sleep(0.01)
        assert [t for t, _ in sent] == ["delivery_report"]
        payload = sent[0][1]
        # DFS, working day: U = 0.5; window 13:00-16:00 metered 0.5 -> A = 0;
        # delivered = 0.5 - 0.2 = 0.3 per period -> 0.6 kWh
        assert payload["event_id"] == "dfs-42" and payload["method"] == "dfs"
        assert payload["total_delivered_kwh"] == pytest.approx(0.6)
        assert (await flex.book.current("dfs-42")).status == "reported"
        assert (await flex.book.report("dfs-42", 0))["meter_data_sha256"] == payload[
            "meter_data_sha256"
        ]
        await clock.advance(600)
        await asyncio.sleep(0.05)
        assert len(sent) == 1  # reported once
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await db.close()


async def test_service_reports_with_gaps_after_giving_up(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0)
    sent: list[tuple[str, dict]] = []
    cfg = FlexConfig(enabled=True, meter_device_id="smart-meter", report_give_up_s=86400)
    flex = FlexService(cfg, "Europe/London", db, clock, lambda t, p: sent.append((t, p)),
                       import_limit_w=13800.0, export_limit_w=3680.0)  # fmt: skip
    try:
        await flex.on_event(ev(0))
        await write_meter(db, END, None)  # the meter reports the event window as missing
        await clock.advance(12 * 3600)
        assert await flex.report_due() == 0
        await clock.advance(24 * 3600)
        assert await flex.report_due() == 1
        payload = sent[0][1]
        assert payload["total_delivered_kwh"] is None
        assert [p["metered_kwh"] for p in payload["periods"]] == [None, None]
    finally:
        await db.close()


async def test_service_without_meter_data_waits(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0)
    cfg = FlexConfig(enabled=True, meter_device_id="smart-meter")
    flex = FlexService(cfg, "Europe/London", db, clock, lambda t, p: None,
                       import_limit_w=13800.0, export_limit_w=3680.0)  # fmt: skip
    try:
        await flex.on_event(ev(0))
        await clock.advance(12 * 3600)
        assert await flex.report_due() == 0  # no meter data yet: wait, don't invent zeros
        disabled = FlexService(FlexConfig(), "Europe/London", db, clock, lambda t, p: None,
                               import_limit_w=1.0, export_limit_w=1.0)  # fmt: skip
        d = await disabled.on_event(ev(5))
        assert d.status == "opted_out" and d.reason == "flexibility is not enabled"
    finally:
        await db.close()


@pytest.mark.parametrize("use_estimated", [True, False])
async def test_estimated_meter_periods(tmp_path: Path, use_estimated: bool) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0)
    sent: list[tuple[str, dict]] = []
    cfg = FlexConfig(enabled=True, meter_device_id="smart-meter",
                     use_estimated_intervals=use_estimated)  # fmt: skip
    flex = FlexService(cfg, "Europe/London", db, clock, lambda t, p: sent.append((t, p)),
                       import_limit_w=13800.0, export_limit_w=3680.0)  # fmt: skip
    try:
        await flex.on_event(ev(0))
        await write_meter(db, END, 200.0, estimated_at=datetime(2024, 1, 30, 3, tzinfo=UTC))
        await clock.advance(12 * 3600)
        assert await flex.report_due() == 1
        p = sent[0][1]
        if use_estimated:  # counted, and the evidence says how many periods were estimated
            assert p["meter_data"]["estimated_periods"] == 1
            assert "2024-01-30" in p["days_used"]
        else:  # treated as a gap: 30 Jan is left out as a day with missing data
            assert p["meter_data"]["estimated_periods"] == 0
            assert {"day": "2024-01-30", "reason": "missing data"} in p["exclusions"]
        assert p["total_delivered_kwh"] == pytest.approx(0.6)
    finally:
        await db.close()


async def test_report_is_kept_until_the_uplink_takes_it(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0)
    calls: list[str] = []

    async def send(type_: str, payload: dict) -> None:
        calls.append(type_)
        if len(calls) == 1:
            raise OSError("outbox: disk full")  # the first hand-over fails

    cfg = FlexConfig(enabled=True, meter_device_id="smart-meter", check_interval_s=600)
    flex = FlexService(cfg, "Europe/London", db, clock, send, import_limit_w=13800.0,
                       export_limit_w=3680.0)  # fmt: skip
    try:
        await flex.on_event(ev(0))
        await write_meter(db, END, 200.0)
        await clock.advance(12 * 3600)
        task = asyncio.create_task(flex.run())
        await wait_until(lambda: len(calls) == 1, 10, "the first hand-over")
        assert calls == ["delivery_report"]
        assert (await flex.book.current("dfs-42")).status == "accepted"  # not lost

        async def retried() -> bool:
            # Advance again until the service, asleep for its check interval, tries again;
            # a single advance could land before it went to sleep (real threads, real load).
            await clock.advance(600)
            await asyncio.sleep(0.02)
            return len(calls) == 2

        await wait_until(retried, 10, "the retried hand-over")
        assert calls == ["delivery_report", "delivery_report"]
        assert (await flex.book.current("dfs-42")).status == "reported"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await db.close()


async def test_the_owner_opts_out_of_an_accepted_event_and_the_aggregator_is_told(
    tmp_path: Path,
) -> None:
    from hems.flex.config import PolicyConfig
    from hems.flex.events import EventError
    from hems.uplink.messages import EventResponse

    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0)
    sent: list[tuple[str, dict]] = []
    changes: list[list[FlexInstruction]] = []
    cfg = FlexConfig(enabled=True, meter_device_id="smart-meter",
                     policy=PolicyConfig(owner_opt_out_before_s=1800))  # fmt: skip
    flex = FlexService(cfg, "Europe/London", db, clock, lambda t, p: sent.append((t, p)),
                       import_limit_w=13800.0, export_limit_w=3680.0,
                       on_change=changes.append)  # fmt: skip
    try:
        assert (await flex.on_event(ev(0))).status == "accepted"
        assert len(changes[-1]) == 1
        answer = await flex.opt_out("dfs-42")
        assert answer.status == "opted_out"
        assert changes[-1] == []  # the plan and the live target drop it
        ((kind, payload),) = sent
        assert kind == "event_response"
        message = EventResponse.model_validate(payload)  # the wire schema
        assert (message.event_id, message.modification_number, message.status) == (
            "dfs-42", 0, "opted_out",
        )  # fmt: skip
        stored = await flex.book.current("dfs-42")
        assert stored is not None and stored.status == "opted_out"
        with pytest.raises(EventError, match="not an accepted event"):
            await flex.opt_out("dfs-42")
        # A new modification, accepted, inside the policy's 30 min before the start: refused.
        assert (await flex.on_event(ev(1))).status == "accepted"
        await clock.advance((START - T0).total_seconds() - 600)
        with pytest.raises(EventError, match="less than 1800 s before the start"):
            await flex.opt_out("dfs-42")
        assert len(sent) == 1  # nothing more told to the aggregator
    finally:
        await db.close()
