from datetime import UTC, datetime

import pytest

from hems.core import ManualClock, Quantity, Reading, Role, SiteState

START = datetime(2026, 3, 1, tzinfo=UTC)


def reading(device: str, q: Quantity, value: float, clock: ManualClock) -> Reading:
    return Reading(device, q, value, clock.now())


async def test_latest_value_ages_and_goes_stale() -> None:
    clock = ManualClock(START)
    state = SiteState(clock, stale_after_s=10)
    state.register_device("grid", Role.GRID)
    state.publish([reading("grid", Quantity.POWER_W, 1200, clock)])
    await clock.advance(4)
    latest = state.latest("grid", Quantity.POWER_W)
    assert latest is not None and latest.value == 1200 and latest.age_s == 4
    assert not latest.stale and state.fresh_value("grid", Quantity.POWER_W) == 1200
    await clock.advance(7)
    assert state.latest("grid", Quantity.POWER_W).stale  # type: ignore[union-attr]
    assert state.fresh_value("grid", Quantity.POWER_W) is None
    assert state.is_stale("grid")


async def test_per_device_stale_limit_and_mark_down() -> None:
    clock = ManualClock(START)
    state = SiteState(clock, stale_after_s=10)
    state.register_device("p1", Role.GRID, stale_after_s=2)
    state.publish([reading("p1", Quantity.POWER_W, 5, clock)])
    await clock.advance(3)
    assert state.is_stale("p1")
    state.publish([reading("p1", Quantity.POWER_W, 6, clock)])
    assert not state.is_stale("p1")
    state.mark_down("p1", "connection refused")
    assert state.is_stale("p1") and state.down_reason("p1") == "connection refused"
    state.publish([reading("p1", Quantity.POWER_W, 7, clock)])
    assert not state.is_stale("p1") and state.down_reason("p1") is None


async def test_role_total_is_none_when_any_member_is_stale() -> None:
    clock = ManualClock(START)
    state = SiteState(clock, stale_after_s=5)
    state.register_device("pv1", Role.PV)
    state.register_device("pv2", Role.PV, stale_after_s=100)
    state.publish([reading("pv1", Quantity.POWER_W, 1000, clock)])
    state.publish([reading("pv2", Quantity.POWER_W, 500, clock)])
    assert state.role_total(Role.PV) == 1500
    await clock.advance(6)
    # A stale member makes the total unknown: missing is never zero.
    assert state.role_total(Role.PV) is None
    assert state.role_total(Role.BATTERY) is None


def test_listeners_get_every_batch() -> None:
    clock = ManualClock(START)
    state = SiteState(clock)
    got: list[list[Reading]] = []
    state.add_listener(got.append)
    batch = [reading("x", Quantity.SOC_PCT, 50, clock), reading("x", Quantity.POWER_W, 1, clock)]
    state.publish(batch)
    assert got == [batch]
    snap = state.snapshot()
    assert {row["quantity"] for row in snap} == {"soc_pct", "power_w"}
    assert next(r for r in snap if r["quantity"] == "soc_pct")["unit"] == "%"


def test_reading_rejects_nan_and_naive_time() -> None:
    with pytest.raises(ValueError, match="finite"):
        Reading("x", Quantity.POWER_W, float("nan"), START)
    with pytest.raises(ValueError, match="aware"):
        Reading("x", Quantity.POWER_W, 1.0, datetime(2026, 1, 1))
