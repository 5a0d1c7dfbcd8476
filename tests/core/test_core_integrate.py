"""Battery energy in and out from power samples: sample-and-hold, capped, split by sign."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from hems.core.integrate import SplitEnergy

T0 = datetime(2026, 6, 10, 12, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_each_sample_holds_until_the_next_and_signs_are_summed_apart() -> None:
    e = SplitEnergy()
    e.add("bat", at(0), 3600.0)  # charging 3.6 kW for 10 s = 10 Wh
    e.add("bat", at(10), -7200.0)  # discharging 7.2 kW for 5 s = 10 Wh out
    e.add("bat", at(15), 0.0)
    assert e.positive_wh == pytest.approx(10.0) and e.negative_wh == pytest.approx(10.0)


def test_a_gap_is_held_at_most_max_hold_s() -> None:
    e = SplitEnergy(max_hold_s=60)
    e.add("bat", at(0), 3600.0)
    e.add("bat", at(3600), 3600.0)  # an hour without samples counts 60 s, not an hour
    assert e.positive_wh == pytest.approx(60.0)


def test_devices_are_held_apart_and_bad_samples_skipped() -> None:
    e = SplitEnergy()
    e.add("a", at(0), 1800.0)
    e.add("b", at(0), -1800.0)
    e.add("a", at(-5), 99999.0)  # out of order: skipped
    e.add("a", at(2), math.nan)  # never a value
    e.add("a", at(4), 0.0)
    e.add("b", at(4), 0.0)
    assert e.positive_wh == pytest.approx(2.0) and e.negative_wh == pytest.approx(2.0)
