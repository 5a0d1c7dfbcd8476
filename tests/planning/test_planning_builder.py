"""The pure problem builder: explicit inputs in, `Problem` and notes out (tables of cases)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from hems.core.site import LimitsConfig
from hems.planning.builder import (
    Envelope,
    EnvelopeInterval,
    EvRequest,
    ProblemInputs,
    build_problem,
    grid_caps,
    without,
)
from hems.planning.config import (
    BatteryPlanConfig,
    DeferrableLoadConfig,
    EvPlanConfig,
    PlannerConfig,
)
from hems.planning.problem import FlexConstraint

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 11, 27, 16, 5, tzinfo=UTC)
START = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
N = 48  # 24 h of 30-min slots
END = START + timedelta(hours=24)
LIMITS = LimitsConfig(fuse_a=60, export_limit_w=3680, battery_reserve_pct=10)  # 13.8 kW in

BATTERY = BatteryPlanConfig(
    device_id="house-battery", capacity_wh=9500, max_charge_w=3600, max_discharge_w=3600
)
WALLBOX = EvPlanConfig(charger_id="wallbox", default_departure="07:00", target_energy_wh=20000)
DISHWASHER = DeferrableLoadConfig(
    device_id="dishwasher", power_w=1800, run_time_min=120, window_start="20:00",
    window_end="07:00", contiguous=True, min_on_min=60,
)  # fmt: skip


def inputs(**kw: object) -> ProblemInputs:
    base = ProblemInputs(
        now=NOW,
        start=START,
        n_slots=N,
        step_min=30,
        import_price_per_kwh=(0.25,) * N,
        export_price_per_kwh=(0.15,) * N,
        pv_w=(0.0,) * N,
        load_w=(400.0,) * N,
        input_notes=(),
        limits=LIMITS,
        zone=LONDON,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


# -- batteries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("soc", "planned_soc"),
    [
        (None, None),  # stale or never read
        (math.nan, None),
        (40.0, 40.0),
        (104.0, 100.0),  # a reading just out of range is clamped, not refused
        (-2.0, 0.0),
    ],
)
def test_battery_is_planned_only_with_a_fresh_soc(
    soc: float | None, planned_soc: float | None
) -> None:
    problem, notes = build_problem(
        inputs(batteries=(BATTERY,), battery_soc_pct={"house-battery": soc})
    )
    if planned_soc is None:
        assert problem.batteries == []
        assert notes == ["batteries[0] house-battery: SoC unknown (stale); not planned"]
    else:
        (spec,) = problem.batteries
        assert spec.initial_soc_pct == planned_soc and notes == []
        assert spec.reserve_pct == 10.0 and spec.capacity_wh == 9500  # site reserve, config


def test_a_battery_missing_from_the_socs_is_not_planned_and_named_by_index() -> None:
    other = BATTERY.model_copy(update={"device_id": "garage-battery"})
    problem, notes = build_problem(
        inputs(batteries=(BATTERY, other), battery_soc_pct={"house-battery": 55.0})
    )
    assert [b.id for b in problem.batteries] == ["house-battery"]
    assert notes == ["batteries[1] garage-battery: SoC unknown (stale); not planned"]


# -- EVs -------------------------------------------------------------------------------

ARRIVED = NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("request_", "delivered_wh", "arrival", "departure", "energy_wh"),
    [
        # Default departure 07:00 London (= UTC in November), the configured 20 kWh target.
        (EvRequest(ARRIVED, None, None), None, ARRIVED, datetime(2026, 11, 28, 7, tzinfo=UTC),
         20000.0),
        # What the session has delivered already is not asked again.
        (EvRequest(ARRIVED, None, None), 5000.0, ARRIVED, datetime(2026, 11, 28, 7, tzinfo=UTC),
         15000.0),
        (EvRequest(ARRIVED, None, 8000.0), 9000.0, ARRIVED,
         datetime(2026, 11, 28, 7, tzinfo=UTC), 0.0),
        # Plugged in after the slot began: the session counts from the slot start.
        (EvRequest(NOW, NOW + timedelta(hours=3), 7000.0), None, START,
         NOW + timedelta(hours=3), 7000.0),
        # A departure past the horizon is cut at its end.
        (EvRequest(ARRIVED, NOW + timedelta(days=3), None), None, ARRIVED, END, 20000.0),
    ],
)  # fmt: skip
def test_ev_request_becomes_a_session_window(
    request_: EvRequest,
    delivered_wh: float | None,
    arrival: datetime,
    departure: datetime,
    energy_wh: float,
) -> None:
    problem, notes = build_problem(
        inputs(
            evs=(WALLBOX,),
            ev_requests={"wallbox": request_},
            ev_session_energy_wh={"wallbox": delivered_wh},
        )
    )
    (session,) = problem.evs
    assert (session.arrival, session.departure, session.energy_wh) == (
        arrival,
        departure,
        energy_wh,
    )
    assert session.max_power_w == 32 * 230 and session.min_power_w == 6 * 230
    assert notes == []


def test_a_shortened_run_time_is_whole_slots() -> None:
    # Window ends 06:45: from the 06:00 slot 45 min remain, of which one whole 30-min slot.
    early = DISHWASHER.model_copy(update={"window_end": "06:45", "min_on_min": 0.0})
    now = datetime(2026, 11, 28, 6, 5, tzinfo=UTC)
    problem, notes = build_problem(inputs(now=now, start=now.replace(minute=0), loads=(early,)))
    assert problem.loads[0].run_time_min == 30.0
    assert notes == [
        "loads dishwasher: 120 min left but only 45 min of the window remain in the horizon;"
        " run time shortened"
    ]


def test_ev_target_from_soc_and_no_request_no_session() -> None:
    by_soc = WALLBOX.model_copy(update={"target_energy_wh": None, "target_soc_pct": 80.0})
    problem, _ = build_problem(
        inputs(evs=(by_soc,), ev_requests={"wallbox": EvRequest(ARRIVED, None, None)})
    )
    assert problem.evs[0].energy_wh == pytest.approx(0.8 * 60000)
    assert build_problem(inputs(evs=(WALLBOX,)))[0].evs == []  # configured, not plugged in


# -- deferrable loads ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "done_min", "run_time_min", "note"),
    [
        (NOW, 0.0, 120.0, None),  # tonight's window, nothing run yet
        (datetime(2026, 11, 28, 1, 0, tzinfo=UTC), 60.0, 60.0, None),  # inside, half done
        (datetime(2026, 11, 28, 1, 0, tzinfo=UTC), 120.0, None, None),  # inside, all done
        # From the 06:00 slot, 60 min of the window are left for 120 min of run time.
        (datetime(2026, 11, 28, 6, 20, tzinfo=UTC), 0.0, 60.0,
         "loads dishwasher: 120 min left but only 60 min of the window remain in the "
         "horizon; run time shortened"),
    ],
)  # fmt: skip
def test_load_gets_the_run_time_still_owed_in_its_window(
    now: datetime, done_min: float, run_time_min: float | None, note: str | None
) -> None:
    start = now.replace(minute=now.minute - now.minute % 30)
    window_start = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    problem, notes = build_problem(
        inputs(
            now=now,
            start=start,
            loads=(DISHWASHER,),
            load_done_min={("dishwasher", window_start): done_min},
        )
    )
    assert notes == ([note] if note else [])
    if run_time_min is None:
        assert problem.loads == []
        return
    (load,) = problem.loads
    assert load.run_time_min == run_time_min
    assert load.window_start == max(window_start, start)
    assert load.window_end == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    assert load.min_on_min == min(60.0, run_time_min) and load.contiguous


# -- grid caps, forecasts, notes -------------------------------------------------------

T23 = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("envelope", "slot", "import_w", "export_w"),
    [
        (None, START, 13800.0, 3680.0),  # the site's own limits
        (Envelope(default_import_w=9000.0), START, 9000.0, 3680.0),
        (Envelope(default_import_w=20000.0, default_export_w=5000.0), START, 13800.0, 3680.0),
        (Envelope(9000.0, None, (EnvelopeInterval(T23, T23 + timedelta(hours=2), 1500.0),)),
         T23 + timedelta(minutes=90), 1500.0, 3680.0),
        (Envelope(9000.0, None, (EnvelopeInterval(T23, T23 + timedelta(hours=2), 1500.0),)),
         T23 + timedelta(hours=2), 9000.0, 3680.0),
        # An interval touching only part of a slot still caps the whole slot.
        (Envelope(None, None, (EnvelopeInterval(T23 + timedelta(minutes=10), T23 + timedelta(
            minutes=20), None, 0.0),)), T23, 13800.0, 0.0),
        # Overlapping intervals: the tightest wins.
        (Envelope(None, 3000.0, (EnvelopeInterval(T23, T23 + timedelta(hours=1), 8000.0, 2000.0),
                                 EnvelopeInterval(T23, T23 + timedelta(hours=1), 6000.0, None))),
         T23, 6000.0, 2000.0),
    ],
)  # fmt: skip
def test_grid_caps_are_the_tightest_of_site_and_envelope(
    envelope: Envelope | None, slot: datetime, import_w: float, export_w: float
) -> None:
    imp, exp = grid_caps(LIMITS, envelope, START, 30, N)
    i = int((slot - START) / timedelta(minutes=30))
    assert (imp[i], exp[i]) == (import_w, export_w)
    problem, _ = build_problem(inputs(envelope=envelope))
    assert problem.import_cap_w == imp and problem.export_cap_w == exp


def test_events_are_passed_on_as_constraints_beside_the_caps() -> None:
    event = FlexConstraint(id="ev-1", start=T23, end=T23 + timedelta(hours=1), import_cap_w=0)
    problem, _ = build_problem(inputs(events=(event,), envelope=Envelope(default_import_w=9000)))
    assert problem.events == [event]
    assert set(problem.series("import_cap_w")) == {9000.0}  # the event is its own constraint


def test_forecasts_are_cleaned_and_a_load_above_the_fuse_is_clipped() -> None:
    small = LimitsConfig(fuse_a=1)  # 230 W
    pv = (-5.0, 0.0, 300.0) + (0.0,) * (N - 3)
    problem, notes = build_problem(inputs(limits=small, pv_w=pv, load_w=(400.0,) * N))
    assert problem.pv_w[:3] == [0.0, 0.0, 300.0]
    assert problem.load_w[:3] == [230.0, 230.0, 400.0]  # slot 2: PV covers the rest
    assert notes == ["load: forecast above the import limit in 47 slots from 16:00; clipped"]


def test_notes_keep_their_order_and_the_problem_its_settings() -> None:
    problem, notes = build_problem(
        inputs(
            input_notes=("tariff.import: no price", "pv: cleaned"),
            batteries=(BATTERY,),
            limits=LimitsConfig(fuse_a=1),
            battery_to_ev=False,
        )
    )
    assert notes[:3] == [
        "tariff.import: no price",
        "pv: cleaned",
        "batteries[0] house-battery: SoC unknown (stale); not planned",
    ]
    assert notes[3].startswith("load: forecast above the import limit")
    assert problem.timezone == "Europe/London" and problem.battery_to_ev is False
    assert (problem.start, problem.n_slots, problem.step_min) == (START, N, 30)


def test_same_inputs_same_problem() -> None:
    inp = inputs(
        batteries=(BATTERY,), battery_soc_pct={"house-battery": 40.0}, evs=(WALLBOX,),
        ev_requests={"wallbox": EvRequest(ARRIVED, None, None)}, loads=(DISHWASHER,),
    )  # fmt: skip
    assert build_problem(inp)[0].model_dump_json() == build_problem(inp)[0].model_dump_json()


@pytest.mark.parametrize(
    ("field", "left"),
    [("loads[0].run_time_min", ["b"]), ("loads[1]", ["a"]), ("loads", [])],
)
def test_without_drops_the_named_entry_or_the_whole_group(field: str, left: list[str]) -> None:
    def load(name: str) -> DeferrableLoadConfig:
        return DISHWASHER.model_copy(update={"device_id": name})

    problem, _ = build_problem(inputs(loads=(load("a"), load("b"))))
    assert [ld.id for ld in without(problem, field).loads] == left


def test_time_sharing_settings_reach_the_problem_and_are_checked() -> None:
    problem, _ = build_problem(inputs(time_share=False, min_phase_s=120.0))
    assert (problem.time_share, problem.min_phase_s) == (False, 120.0)
    assert build_problem(inputs())[0].time_share is True  # the default: split where it pays
    with pytest.raises(ValidationError, match="min_phase_s"):
        PlannerConfig(min_phase_s=5)
