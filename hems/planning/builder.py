"""The optimisation `Problem` from explicit inputs: pure functions, no I/O, no clock.

`PlannerService` gathers what it knows (prices and forecasts already fetched, the fresh
battery SoCs and EV session energies read from the live state, its EV requests, deferrable
run time already done, the aggregator envelope, the accepted flexibility events) into one
frozen `ProblemInputs` and calls `build_problem(inputs)`, which returns the `Problem` and the
notes to carry on the plan. The same inputs always give the same problem, so every rule of
how the configuration and the live state become a problem is testable as a table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from hems.core.localtime import next_local
from hems.planning.config import (
    BatteryPlanConfig,
    DeferrableLoadConfig,
    EvPlanConfig,
    SocTargetConfig,
)
from hems.planning.problem import (
    BatterySpec,
    DeferrableLoad,
    EvSession,
    FlexConstraint,
    Problem,
    SocTarget,
)

if TYPE_CHECKING:
    from hems.core.site import LimitsConfig


@dataclass(frozen=True, slots=True)
class EnvelopeInterval:
    start: datetime
    end: datetime
    import_w: float | None = None
    export_w: float | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """An aggregator's operating envelope (down/envelope): caps the planner must respect."""

    default_import_w: float | None = None
    default_export_w: float | None = None
    intervals: tuple[EnvelopeInterval, ...] = ()


@dataclass(frozen=True, slots=True)
class EvRequest:
    """A plugged-in EV as asked: since when, until when (None = the configured default
    departure) and how much energy (None = the configured target)."""

    arrival: datetime
    departure: datetime | None
    energy_wh: float | None


@dataclass(frozen=True, slots=True)
class ProblemInputs:
    """Everything one `Problem` is made from; the service fills it, `build_problem` reads it.

    Series have one value per slot. SoCs and session energies are what the live state holds
    *fresh* (None = unknown or stale). `load_done_min` is keyed by (device id, start of the
    load's window): the run time already given in that window.
    """

    now: datetime  # aware; EV default departures and load windows are found from here
    start: datetime  # aware, start of slot 0 on a settlement boundary
    n_slots: int
    step_min: Literal[15, 30]
    import_price_per_kwh: tuple[float, ...]
    export_price_per_kwh: tuple[float, ...]
    pv_w: tuple[float, ...]  # PV forecast [W]; negative values are planned as 0
    load_w: tuple[float, ...]  # base-load forecast [W]; likewise
    input_notes: tuple[str, ...]  # what the tariff and the forecasts flagged, noted first
    limits: LimitsConfig
    zone: ZoneInfo  # the site's zone: local windows and times in notes
    batteries: tuple[BatteryPlanConfig, ...] = ()
    battery_soc_pct: Mapping[str, float | None] = field(default_factory=dict)
    evs: tuple[EvPlanConfig, ...] = ()
    ev_requests: Mapping[str, EvRequest] = field(default_factory=dict)  # by charger id
    ev_session_energy_wh: Mapping[str, float | None] = field(default_factory=dict)
    loads: tuple[DeferrableLoadConfig, ...] = ()
    load_done_min: Mapping[tuple[str, datetime], float] = field(default_factory=dict)
    envelope: Envelope | None = None
    events: tuple[FlexConstraint, ...] = ()  # the accepted events, as the service keeps them
    battery_to_ev: bool = True
    time_share: bool = True
    min_phase_s: float = 60.0
    soc_targets: tuple[SocTargetConfig, ...] = ()  # planner.soc_targets


def build_problem(inp: ProblemInputs) -> tuple[Problem, list[str]]:
    """The `Problem` for these inputs, and the notes the plan should carry (in order: the
    inputs' own flags, then what was left out or shortened here)."""
    notes = list(inp.input_notes)
    end = inp.start + timedelta(minutes=inp.step_min * inp.n_slots)
    batteries, battery_notes = battery_specs(inp, end)
    evs = ev_sessions(inp, end)
    loads, load_notes = deferrable_loads(inp, end)
    pv_w, load_w, clip_notes = base_series(inp)
    import_cap_w, export_cap_w = grid_caps(
        inp.limits, inp.envelope, inp.start, inp.step_min, len(pv_w)
    )
    problem = Problem(
        start=inp.start,
        step_min=inp.step_min,
        import_price_per_kwh=list(inp.import_price_per_kwh),
        export_price_per_kwh=list(inp.export_price_per_kwh),
        import_cap_w=import_cap_w,
        export_cap_w=export_cap_w,
        pv_w=pv_w,
        load_w=load_w,
        batteries=batteries,
        evs=evs,
        loads=loads,
        events=list(inp.events),
        timezone=str(inp.zone.key),
        battery_to_ev=inp.battery_to_ev,
        time_share=inp.time_share,
        min_phase_s=inp.min_phase_s,
    )
    return problem, notes + battery_notes + load_notes + clip_notes


def battery_specs(
    inp: ProblemInputs, end: datetime | None = None
) -> tuple[list[BatterySpec], list[str]]:
    """The batteries with a fresh SoC; one without is left out of the plan and noted (a plan
    from a guessed SoC could empty or overfill it). Each with its SoC targets inside the
    horizon (ending at `end`)."""
    specs: list[BatterySpec] = []
    notes: list[str] = []
    for i, b in enumerate(inp.batteries):
        soc = inp.battery_soc_pct.get(b.device_id)
        if soc is None or math.isnan(soc):
            notes.append(f"batteries[{i}] {b.device_id}: SoC unknown (stale); not planned")
            continue
        specs.append(
            BatterySpec(
                id=b.device_id,
                capacity_wh=b.capacity_wh,
                initial_soc_pct=min(100.0, max(0.0, soc)),
                max_charge_w=b.max_charge_w,
                max_discharge_w=b.max_discharge_w,
                charge_efficiency=b.charge_efficiency,
                discharge_efficiency=b.discharge_efficiency,
                min_soc_pct=b.min_soc_pct,
                max_soc_pct=b.max_soc_pct,
                reserve_pct=inp.limits.battery_reserve_pct,
                degradation_cost_per_kwh=b.degradation_cost_per_kwh,
                terminal_value_per_kwh=b.terminal_value_per_kwh,
                **soc_targets_of(inp, b.device_id, end),
            )
        )
    return specs, notes


def soc_targets_of(inp: ProblemInputs, device_id: str, end: datetime | None) -> dict[str, object]:
    """The `BatterySpec` fields for `planner.soc_targets` of this battery: a target by a
    time at its next local occurrence, a window the current one if open (else the next),
    clipped to the horizon; those wholly beyond it are left to a later plan."""
    targets: list[SocTarget] = []
    fields: dict[str, object] = {}
    for i, t in enumerate(inp.soc_targets):
        if t.device_id != device_id:
            continue
        name = f"planner.soc_targets[{i}]"
        if t.end_soc_pct is not None:
            fields["end_soc_pct"] = t.end_soc_pct
            fields["end_soc_penalty_per_kwh"] = t.penalty_per_kwh
        elif t.by is not None and t.soc_pct is not None:
            at = next_local(inp.now, t.by, inp.zone).astimezone(UTC)
            if end is None or at <= end:
                targets.append(
                    SocTarget(
                        at=at, soc_pct=t.soc_pct, penalty_per_kwh=t.penalty_per_kwh, name=name
                    )
                )
        elif t.start is not None and t.end is not None and t.min_soc_pct is not None:
            w_start, w_end = local_window(t.start, t.end, inp.now, inp.zone)
            w_start = max(w_start, inp.start)
            if end is not None:
                w_end = min(w_end, end)
            if w_end > w_start:
                targets.append(
                    SocTarget(
                        at=w_start,
                        until=w_end,
                        soc_pct=t.min_soc_pct,
                        penalty_per_kwh=t.penalty_per_kwh,
                        name=name,
                    )
                )
    if targets:
        fields["soc_targets"] = targets
    return fields


def ev_sessions(inp: ProblemInputs, end: datetime) -> list[EvSession]:
    """One session per charger with a request, wanting what is still missing of its target,
    inside the horizon."""
    sessions: list[EvSession] = []
    for e in inp.evs:
        req = inp.ev_requests.get(e.charger_id)
        if req is None:
            continue
        departure = req.departure or (
            next_local(inp.now, e.default_departure, inp.zone).astimezone(UTC)
        )
        if req.energy_wh is not None:
            need = req.energy_wh
        elif e.target_energy_wh is not None:
            need = e.target_energy_wh
        else:
            need = (e.target_soc_pct or 100.0) / 100.0 * e.battery_capacity_wh
        done = inp.ev_session_energy_wh.get(e.charger_id) or 0.0
        sessions.append(
            EvSession(
                id=e.charger_id,
                arrival=min(req.arrival, inp.start),
                departure=min(departure, end),
                energy_wh=max(0.0, need - done),
                min_power_w=e.min_power_w,
                max_power_w=e.max_power_w,
                battery_capacity_wh=e.battery_capacity_wh,
                shortfall_penalty_per_kwh=e.shortfall_penalty_per_kwh,
            )
        )
    return sessions


def deferrable_loads(inp: ProblemInputs, end: datetime) -> tuple[list[DeferrableLoad], list[str]]:
    """Each load whose window overlaps the horizon, with the run time still owed in it
    (shortened, and noted, when less of the window than that remains)."""
    loads: list[DeferrableLoad] = []
    notes: list[str] = []
    step = inp.step_min
    for d in inp.loads:
        w_start, w_end = load_window(d, inp.now, inp.zone)
        w_start, w_end = max(w_start, inp.start), min(w_end, end)
        if w_end <= w_start:
            continue
        done_min = inp.load_done_min.get((d.device_id, load_window(d, inp.start, inp.zone)[0]))
        remaining = d.run_time_min - (done_min or 0.0)
        if remaining <= 0:
            continue
        window_min = (w_end - w_start).total_seconds() / 60
        if remaining > window_min:
            notes.append(
                f"loads {d.device_id}: {remaining:g} min left but only {window_min:g} min "
                "of the window remain in the horizon; run time shortened"
            )
            remaining = window_min - window_min % step
            if remaining <= 0:
                continue
        loads.append(
            DeferrableLoad(
                id=d.device_id,
                power_w=d.power_w,
                run_time_min=remaining,
                window_start=w_start,
                window_end=w_end,
                contiguous=d.contiguous,
                min_on_min=min(d.min_on_min, remaining),
            )
        )
    return loads, notes


def base_series(inp: ProblemInputs) -> tuple[list[float], list[float], list[str]]:
    """PV and base load as planned: never negative, and the load at most what the
    connection and PV can supply."""
    pv_w = [max(0.0, v) for v in inp.pv_w]
    load_w = [max(0.0, v) for v in inp.load_w]
    # A forecast base load above what the connection can supply is a forecast error, not
    # a reason to give up planning: clip it and say so.
    most_w = [inp.limits.import_limit_w + p for p in pv_w]
    clipped = [i for i, (ld, mx) in enumerate(zip(load_w, most_w, strict=True)) if ld > mx]
    if not clipped:
        return pv_w, load_w, []
    first = inp.start + timedelta(minutes=inp.step_min * clipped[0])
    note = (
        f"load: forecast above the import limit in {len(clipped)} slots from "
        f"{first.astimezone(inp.zone):%H:%M}; clipped"
    )
    load_w = [min(ld, mx) for ld, mx in zip(load_w, most_w, strict=True)]
    return pv_w, load_w, [note]


def grid_caps(
    limits: LimitsConfig, envelope: Envelope | None, start: datetime, step_min: int, n: int
) -> tuple[list[float], list[float]]:
    """Per-slot import/export caps [W]: the site's limits, tightened by the envelope's
    defaults and by every envelope interval overlapping the slot."""
    imp = [limits.import_limit_w] * n
    exp = [limits.export_limit_w] * n
    if envelope is None:
        return imp, exp
    step = timedelta(minutes=step_min)
    for i in range(n):
        t0 = start + i * step
        here = [iv for iv in envelope.intervals if iv.start < t0 + step and iv.end > t0]
        imp[i] = tightest(imp[i], envelope.default_import_w, *(iv.import_w for iv in here))
        exp[i] = tightest(exp[i], envelope.default_export_w, *(iv.export_w for iv in here))
    return imp, exp


def tightest(limit_w: float, *caps_w: float | None) -> float:
    """The smallest of `limit_w` and the caps that are set."""
    return min([limit_w, *(c for c in caps_w if c is not None)])


def load_window(
    cfg: DeferrableLoadConfig, now: datetime, zone: ZoneInfo
) -> tuple[datetime, datetime]:
    """The current window if open, else the next one: (start, end) aware UTC."""
    return local_window(cfg.window_start, cfg.window_end, now, zone)


def local_window(
    start_hhmm: str, end_hhmm: str, now: datetime, zone: ZoneInfo
) -> tuple[datetime, datetime]:
    """The local daily window start..end (equal = all day) open now, else the next one:
    (start, end) aware UTC."""
    # In UTC, so that "a day earlier" below is 24 real hours, also across clock changes.
    end = next_local(now, end_hhmm, zone).astimezone(UTC)
    start = next_local(end - timedelta(days=1), start_hhmm, zone).astimezone(UTC)
    if start >= end:
        start -= timedelta(days=1)
    return start, end


def without(problem: Problem, field_name: str) -> Problem:
    """`problem` without the entry an infeasibility names (e.g. 'loads[1].run_time_min'), or
    without the whole group when the name has no index (e.g. 'events')."""
    group = field_name.split("[")[0].split(".")[0]
    items = list(getattr(problem, group))
    if "[" in field_name:
        index = int(field_name.split("[", 1)[1].split("]", 1)[0])
        items = [x for i, x in enumerate(items) if i != index]
    else:
        items = []
    return problem.model_copy(update={group: items})
