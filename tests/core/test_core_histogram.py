"""The control loop's cycle histogram: bucket edges are inclusive upper bounds, like
Prometheus' `le`, and the cumulative view ends at +Inf with every observation."""

from __future__ import annotations

import math

import pytest

from hems.core.histogram import DurationHistogram


def test_observations_land_in_le_buckets_and_accumulate() -> None:
    h = DurationHistogram((0.01, 0.1, 1.0))
    for d in (0.005, 0.01, 0.05, 0.1, 0.5, 3.0):
        h.observe(d)
    assert h.cumulative() == [(0.01, 2), (0.1, 4), (1.0, 5), (math.inf, 6)]
    assert h.count == 6
    assert h.sum_s == pytest.approx(3.665)


def test_bounds_must_ascend() -> None:
    with pytest.raises(ValueError, match="bounds_s"):
        DurationHistogram((1.0, 0.1))
