"""Flexibility events: the model, the acceptance policy, the SQLite event book and offers.

An event asks the home to turn down (or up) for a window: an import cap, an export floor, a
grid setpoint or a price. It is identified by (event_id, modification_number); a higher
modification replaces a lower one (`supersedes`, the one home of that rule). The policy
checks it against the home's limits: unsafe instructions are clamped to what is safe (and the
response says so); events the home should not take (too long, the EV would miss its target,
the battery would go below its reserve) are opted out of. An accepted event reaches the
planner and the control loop as a `hems.core.flex.FlexInstruction` (`instruction_for`).
"""

from __future__ import annotations

import inspect
import json
import math
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo

from hems.core.flex import FlexInstruction
from hems.errors import HemsError, PlanningError
from hems.flex.config import PolicyConfig
from hems.store.db import Database
from hems.store.timeseries import from_ms, to_ms

Kind = Literal["turn_down", "turn_up"]
_FIELDS = ("import_cap_w", "export_floor_w", "setpoint_w", "price_per_kwh")


class EventError(HemsError):
    """A malformed event; the message names the field."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexEvent:
    event_id: str
    modification_number: int
    kind: Kind
    start: datetime  # aware
    end: datetime  # aware
    cancelled: bool = False
    import_cap_w: float | None = None  # import at most [W]
    export_floor_w: float | None = None  # export at least [W]
    setpoint_w: float | None = None  # grid setpoint, + = import [W]
    price_per_kwh: float | None = None
    currency: str | None = None

    @classmethod
    def from_mapping(cls, obj: Mapping[str, object]) -> FlexEvent:
        """From a dict: a down/event payload (times as ISO 8601 text or aware datetimes) or
        `to_json()` as stored. Raises EventError naming the field."""

        def get(name: str, default: Any = None) -> Any:
            return obj.get(name, default)

        try:
            start, end = get("start"), get("end")
            if isinstance(start, str):
                start = datetime.fromisoformat(start)
            if isinstance(end, str):
                end = datetime.fromisoformat(end)
        except ValueError as exc:
            raise EventError(f"event.start/end: not ISO 8601: {exc}") from None
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise EventError("event.start: must be an ISO 8601 time with offset")
        if not isinstance(end, datetime) or end.tzinfo is None:
            raise EventError("event.end: must be an ISO 8601 time with offset")
        if end <= start:
            raise EventError("event.end: must be after start")
        kind = get("kind")
        if kind not in ("turn_down", "turn_up"):
            raise EventError(f"event.kind: must be turn_down or turn_up, got {kind!r}")
        event_id = get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise EventError("event.event_id: must be a non-empty string")
        mod = get("modification_number")
        if not isinstance(mod, int) or isinstance(mod, bool) or mod < 0:
            raise EventError(f"event.modification_number: must be an integer >= 0, got {mod!r}")
        values: dict[str, float | None] = {}
        for name in _FIELDS:
            v = get(name)
            if v is not None and (not isinstance(v, int | float) or not math.isfinite(v)):
                raise EventError(f"event.{name}: must be a finite number, got {v!r}")
            values[name] = None if v is None else float(v)
        return cls(
            event_id=event_id,
            modification_number=mod,
            kind=kind,
            start=start.astimezone(UTC),
            end=end.astimezone(UTC),
            cancelled=bool(get("cancelled", False)),
            currency=get("currency"),
            **values,
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        d["end"] = self.end.isoformat()
        return d


def instruction_for(event: FlexEvent) -> FlexInstruction | None:
    """The instruction of an accepted (effective) event; None for a cancellation or an event
    that asks for nothing.

    Turn-down: a setpoint >= 0 becomes an import cap, a negative one an export floor.
    Turn-up: the setpoint becomes a net-import floor (the aggregator wants at least that much
    import; a negative setpoint means "export at most that much"), soft in the planner.
    A price rides along; the planner follows it only when no power is asked for.
    """
    if event.cancelled:
        return None
    cap, floor, up = event.import_cap_w, event.export_floor_w, None
    if event.setpoint_w is not None:
        if event.kind == "turn_up":
            up = event.setpoint_w
        elif event.setpoint_w >= 0:
            cap = event.setpoint_w if cap is None else min(cap, event.setpoint_w)
        else:
            floor = -event.setpoint_w if floor is None else max(floor, -event.setpoint_w)
    if cap is None and floor is None and up is None and event.price_per_kwh is None:
        return None
    return FlexInstruction(
        event_id=event.event_id,
        modification=event.modification_number,
        start=event.start,
        end=event.end,
        import_cap_w=cap,
        export_floor_w=floor,
        turn_up_floor_w=up,
        price_per_kwh=event.price_per_kwh,
    )


def supersedes(modification: int, stored: int | None) -> bool:
    """The modification rule: an event replaces the stored one of its event_id only with a
    higher modification number; an equal or lower one is outdated."""
    return stored is None or modification > stored


# -- policy ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Feasibility:
    """The planner's estimate of the home's state if it follows the event."""

    ev_target_reachable: bool | None = None  # None: no EV session or unknown
    min_battery_soc_pct: float | None = None  # lowest SoC planned during/after the event [%]
    battery_reserve_pct: float | None = None  # the reserve it must respect [%]


@dataclass(frozen=True, slots=True)
class Decision:
    status: Literal["accepted", "opted_out"]
    effective: FlexEvent  # the event as the home will follow it (clamped)
    reasons: tuple[str, ...] = ()
    clamped: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) or None


@dataclass(frozen=True, slots=True)
class Answer:
    """What the home answers to one event. "outdated": its modification is not above the
    stored one (`stored_modification`); the uplink rejects it as outdated_modification."""

    status: Literal["accepted", "opted_out", "outdated"]
    reason: str | None = None
    clamped: dict[str, float] | None = None
    stored_modification: int | None = None


def evaluate(
    event: FlexEvent,
    policy: PolicyConfig,
    *,
    now: datetime,
    import_limit_w: float,
    export_limit_w: float,
    feasibility: Feasibility | None = None,
) -> Decision:
    """Accept, clamp or opt out of `event` (pure).

    import_limit_w: the fuse limit [W]; export_limit_w: the agreed export limit [W].
    Clamping never opts out: an unsafe instruction is replaced by the nearest safe one and
    named in `clamped` / `reasons`.
    """
    if event.cancelled:
        return Decision("accepted", event, ("cancelled",))
    duration_h = (event.end - event.start).total_seconds() / 3600
    if event.end <= now:
        return Decision("opted_out", event, ("the event window has already ended",))
    if duration_h > policy.max_event_duration_h:
        return Decision(
            "opted_out",
            event,
            (
                f"duration {duration_h:g} h exceeds max_event_duration_h "
                f"{policy.max_event_duration_h:g}",
            ),
        )
    if (event.start - now).total_seconds() < policy.min_notice_s:
        return Decision("opted_out", event, (f"less than {policy.min_notice_s:g} s notice",))

    reasons: list[str] = []
    clamped: dict[str, float] = {}
    max_import = min(import_limit_w, policy.max_import_cap_w or math.inf)
    max_export = min(export_limit_w, policy.max_export_floor_w or math.inf)
    eff = event

    def clamp(name: str, value: float, lo: float, hi: float, why_lo: str, why_hi: str) -> None:
        nonlocal eff
        safe = min(max(value, lo), hi)
        if safe != value:
            clamped[name] = safe
            reasons.append(
                f"{name} {value:g} W clamped to {safe:g} W ({why_lo if safe == lo else why_hi})"
            )
            eff = replace(eff, **{name: safe})

    if event.import_cap_w is not None:
        clamp("import_cap_w", event.import_cap_w, policy.min_import_cap_w, max_import,
              "minimum the home needs", "fuse / configured maximum")  # fmt: skip
    if event.export_floor_w is not None:
        clamp("export_floor_w", event.export_floor_w, 0.0, max_export,
              "not negative", "export limit")  # fmt: skip
    if event.setpoint_w is not None:
        clamp("setpoint_w", event.setpoint_w, -max_export, max_import,
              "export limit", "fuse / configured maximum")  # fmt: skip

    if feasibility is not None:
        if policy.opt_out_if_ev_cannot_reach_target and feasibility.ev_target_reachable is False:
            return Decision("opted_out", eff, ("the EV could not be charged by its departure",))
        if (
            policy.respect_battery_reserve
            and feasibility.min_battery_soc_pct is not None
            and feasibility.battery_reserve_pct is not None
            and feasibility.min_battery_soc_pct < feasibility.battery_reserve_pct
        ):
            return Decision(
                "opted_out",
                eff,
                (
                    f"the battery would fall to {feasibility.min_battery_soc_pct:g} % below its "
                    f"reserve {feasibility.battery_reserve_pct:g} %",
                ),
            )
    return Decision("accepted", eff, tuple(reasons), clamped)


# -- the event book ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event: FlexEvent  # effective (clamped)
    received: FlexEvent  # as received
    status: str
    reasons: tuple[str, ...]


def _row_to_stored(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        event=FlexEvent.from_mapping(json.loads(row["effective_json"])),
        received=FlexEvent.from_mapping(json.loads(row["constraint_json"])),
        status=row["status"],
        reasons=tuple(json.loads(row["reasons_json"])),
    )


class EventBook:
    """Events and reports in SQLite (migration 0005)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def recent_rows(self, limit: int) -> list[tuple[Any, ...]]:
        """The last decided events, newest first, as stored (for hems.flex.views)."""
        return await self._db.fetchall(
            "SELECT event_id, modification_number, kind, start_ms, end_ms, constraint_json,"
            " effective_json, status, reasons_json, received_at_ms FROM flex_events"
            " ORDER BY received_at_ms DESC, modification_number DESC LIMIT ?",
            (limit,),
        )

    async def recent_report_rows(self, limit: int) -> list[tuple[Any, ...]]:
        """The last reports sent, newest first: (event_id, modification, created_ms, json)."""
        return await self._db.fetchall(
            "SELECT event_id, modification_number, created_at_ms, payload_json FROM flex_reports"
            " ORDER BY created_at_ms DESC LIMIT ?",
            (limit,),
        )

    async def record(self, received: FlexEvent, decision: Decision, at: datetime) -> bool:
        """Store a decided event. False (and nothing changed) if it does not supersede the
        stored modification of its event_id (checked in the same transaction)."""

        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT MAX(modification_number) FROM flex_events WHERE event_id = ?",
                (received.event_id,),
            ).fetchone()
            if not supersedes(received.modification_number, row[0]):
                return False
            conn.execute(
                "UPDATE flex_events SET status = 'superseded' WHERE event_id = ? "
                "AND status != 'reported'",
                (received.event_id,),
            )
            status = "cancelled" if received.cancelled else decision.status
            conn.execute(
                "INSERT INTO flex_events(event_id, modification_number, kind, start_ms, end_ms,"
                " constraint_json, effective_json, status, reasons_json, received_at_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    received.event_id,
                    received.modification_number,
                    received.kind,
                    to_ms(received.start),
                    to_ms(received.end),
                    json.dumps(received.to_json()),
                    json.dumps(decision.effective.to_json()),
                    status,
                    json.dumps(list(decision.reasons)),
                    to_ms(at),
                ),
            )
            return True

        return await self._db.call(run)

    async def stored_modification(self, event_id: str) -> int | None:
        """The highest modification number stored for `event_id`, None if never seen."""
        row = await self._db.fetchone(
            "SELECT MAX(modification_number) FROM flex_events WHERE event_id = ?", (event_id,)
        )
        return None if row is None else row[0]

    async def get(self, event_id: str, modification_number: int) -> StoredEvent | None:
        row = await self._db.fetchone(
            "SELECT * FROM flex_events WHERE event_id = ? AND modification_number = ?",
            (event_id, modification_number),
        )
        return None if row is None else _row_to_stored(row)

    async def opt_out(self, event_id: str, modification_number: int, reason: str) -> bool:
        """An accepted event opted out of after the fact (the owner's choice). False if that
        modification is no longer the accepted one (superseded, already reported)."""

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE flex_events SET status = 'opted_out', reasons_json = ? WHERE event_id = ?"
                " AND modification_number = ? AND status = 'accepted'",
                (json.dumps([reason]), event_id, modification_number),
            )
            return cur.rowcount == 1

        return bool(await self._db.call(run))

    async def current(self, event_id: str) -> StoredEvent | None:
        """The highest modification of `event_id`."""
        row = await self._db.fetchone(
            "SELECT * FROM flex_events WHERE event_id = ? ORDER BY modification_number DESC "
            "LIMIT 1",
            (event_id,),
        )
        return None if row is None else _row_to_stored(row)

    async def accepted(self, *, ending_after: datetime) -> list[FlexEvent]:
        """Accepted events (effective form) whose window ends after `ending_after`: the
        constraints for the planner and the control loop."""
        rows = await self._db.fetchall(
            "SELECT * FROM flex_events WHERE status = 'accepted' AND end_ms > ? ORDER BY start_ms",
            (to_ms(ending_after),),
        )
        return [_row_to_stored(r).event for r in rows]

    async def due_for_report(self, *, ended_before: datetime) -> list[StoredEvent]:
        rows = await self._db.fetchall(
            "SELECT * FROM flex_events WHERE status = 'accepted' AND end_ms <= ? ORDER BY end_ms",
            (to_ms(ended_before),),
        )
        return [_row_to_stored(r) for r in rows]

    async def event_days(self, tz: ZoneInfo, *, before: datetime) -> frozenset[date]:
        """Local days touched by accepted or reported events starting before `before`."""
        rows = await self._db.fetchall(
            "SELECT start_ms, end_ms FROM flex_events WHERE status IN ('accepted', 'reported')"
            " AND start_ms < ?",
            (to_ms(before),),
        )
        days: set[date] = set()
        for r in rows:
            d = from_ms(r["start_ms"]).astimezone(tz).date()
            last = (from_ms(r["end_ms"]) - timedelta(milliseconds=1)).astimezone(tz).date()
            while d <= last:
                days.add(d)
                d += timedelta(days=1)
        return frozenset(days)

    async def save_report(
        self, event: FlexEvent, payload: dict[str, Any], method: str, at: datetime
    ) -> None:
        total = payload.get("total_delivered_kwh")

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO flex_reports(event_id, modification_number, created_at_ms,"
                " method, total_delivered_wh, payload_json) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.modification_number,
                    to_ms(at),
                    method,
                    None if total is None else total * 1000.0,
                    json.dumps(payload, sort_keys=True),
                ),
            )
            conn.execute(
                "UPDATE flex_events SET status = 'reported' WHERE event_id = ? "
                "AND modification_number = ?",
                (event.event_id, event.modification_number),
            )

        await self._db.call(run)

    async def report(self, event_id: str, modification_number: int) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT payload_json FROM flex_reports WHERE event_id = ? AND modification_number = ?",
            (event_id, modification_number),
        )
        return None if row is None else json.loads(row[0])


# -- offers ------------------------------------------------------------------------------------

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class OfferPeriod:
    period_start: datetime
    period_end: datetime
    turn_down_w: float  # largest turn-down found feasible [W]
    turn_up_w: float  # largest turn-up (extra net import) found feasible [W]
    turn_down_cost: float | None  # extra cost per kWh turned down [currency/kWh]
    turn_up_cost: float | None = None  # extra cost per kWh turned up (< 0: the home gains)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["period_start"] = self.period_start.isoformat()
        d["period_end"] = self.period_end.isoformat()
        return d


AddProbe = Callable[[P, datetime, datetime, float], P]


@dataclass(frozen=True, slots=True)
class OfferSolver(Generic[P]):
    """How offers re-solve the plan (the planner supplies these; see hems.planning.flex).

    solve(problem) -> cost [currency], raising PlanningError when infeasible; add_cap adds an
    import cap for a period, add_floor a HARD net-import floor (None: no turn-up offers).
    """

    solve: Callable[[P], float]
    add_cap: AddProbe[P]
    add_floor: AddProbe[P] | None


def build_offers(
    problem: P,
    expected_import_w: Mapping[datetime, float],
    periods: Sequence[tuple[datetime, datetime]],
    solve: Callable[[P], float],
    sizes_w: Sequence[float],
    add_cap: AddProbe[P],
    *,
    add_floor: AddProbe[P] | None,
    expected_export_w: Mapping[datetime, float] | None = None,
) -> list[OfferPeriod]:
    """Per period, the largest turn-down and turn-up in `sizes_w` the home can do and what
    each costs.

    expected_import_w / expected_export_w: planned grid import / export per period start [W]
    (from the current Plan). solve(problem) -> cost [currency]; it raises PlanningError
    when the problem is infeasible. The cost of a turn-down is the cost difference of
    re-solving with an import cap of (expected import - size) in that period, per kWh turned
    down; of a turn-up, re-solving with a hard floor of (expected net import + size) on net
    import, per kWh turned up. `add_floor=None` skips turn-up offers.
    """
    base = solve(problem)
    out: list[OfferPeriod] = []
    for start, end in periods:
        hours = (end - start).total_seconds() / 3600
        expected = expected_import_w.get(start, 0.0)
        best_w, best_cost = 0.0, None
        for size in sizes_w:
            if size > expected:
                break  # cannot reduce import below zero
            try:
                cost = solve(add_cap(problem, start, end, expected - size))
            except PlanningError:
                break
            best_w = size
            best_cost = (cost - base) / (size * hours / 1000.0)
        up_w, up_cost = 0.0, None
        if add_floor is not None:
            net = expected - (expected_export_w or {}).get(start, 0.0)
            for size in sizes_w:
                try:
                    cost = solve(add_floor(problem, start, end, net + size))
                except PlanningError:
                    break  # cannot absorb that much more (fuse, nothing left to switch on)
                up_w = size
                up_cost = (cost - base) / (size * hours / 1000.0)
        out.append(OfferPeriod(start, end, best_w, up_w, best_cost, up_cost))
    return out


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


EstimateFn = Callable[[FlexEvent], Feasibility | Awaitable[Feasibility]]
