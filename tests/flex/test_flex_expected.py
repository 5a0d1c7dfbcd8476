"""The expected delivery of an event, from a plan, by the report's rule (per half hour,
baseline − planned net import, a half hour the wrong way counted 0)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from hems.core.plan import Plan, PlanSlot
from hems.flex.expected import expected_delivery_kwh, planned_net_import_wh

T0 = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)


def plan(import_w: list[float], export_w: list[float] | None = None, step_min: int = 15) -> Plan:
    export_w = export_w or [0.0] * len(import_w)
    slots = tuple(
        PlanSlot(
            start=T0 + timedelta(minutes=step_min * i),
            duration_s=step_min * 60,
            price_import_per_kwh=0.3,
            price_export_per_kwh=0.15,
            grid_import_w=imp,
            grid_export_w=exp,
        )
        for i, (imp, exp) in enumerate(zip(import_w, export_w, strict=True))
    )
    return Plan(created_at=T0, slots=slots, cost=0.0, status="optimal")


def test_turn_down_is_baseline_minus_planned_per_half_hour() -> None:
    # 15-min slots, event 17:30–18:30: planned net import 400, 600, 0 (export 1000), 200 W.
    p = plan([900, 900, 400, 600, 0, 200], [0, 0, 0, 0, 1000, 0])
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(minutes=90)
    # Half hour 1: baseline 2000 W → 1.0 kWh; planned (400 + 600) / 4 = 0.25 kWh → 0.75.
    # Half hour 2: planned (−1000 + 200) / 4 = −0.2 kWh → 1.2.
    assert expected_delivery_kwh(p, start, end, 2000.0) == pytest.approx(1.95)
    assert planned_net_import_wh(p, start, end) == pytest.approx(50.0)


def test_a_half_hour_the_wrong_way_counts_zero_and_turn_up_reverses_the_sign() -> None:
    p = plan([3000, 3000, 0, 0])  # 17:00–18:00
    start, end = T0, T0 + timedelta(hours=1)
    # Turn-down against 1000 W: the first half hour goes the wrong way (0), the second 0.5.
    assert expected_delivery_kwh(p, start, end, 1000.0) == pytest.approx(0.5)
    # Turn-up: the first half hour is 1.5 − 0.5 = 1.0 up, the second goes the wrong way.
    assert expected_delivery_kwh(p, start, end, 1000.0, turn_up=True) == pytest.approx(1.0)


def test_unknown_without_a_baseline_or_a_plan_over_the_whole_window() -> None:
    p = plan([500, 500, 500, 500])  # 17:00–18:00
    assert expected_delivery_kwh(p, T0, T0 + timedelta(hours=1), math.nan) is None
    assert (
        expected_delivery_kwh(p, T0 + timedelta(minutes=30), T0 + timedelta(hours=2), 1e3) is None
    )
    before = T0 - timedelta(minutes=15)
    assert expected_delivery_kwh(p, before, T0 + timedelta(minutes=30), 1000.0) is None
    # A window that is not a whole number of half hours: the last period is the remainder.
    got = expected_delivery_kwh(p, T0, T0 + timedelta(minutes=45), 1000.0)
    assert got == pytest.approx(0.75 * 0.5)
