"""The bill and the saving against running without the battery (pure arithmetic)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from hems.planning.costs import HalfHour, bill, saved, without_battery

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def hh(i: int, imp: float | None, exp: float | None, ch: float = 0.0, dis: float = 0.0,
       pi: float = 0.30, pe: float = 0.15) -> HalfHour:  # fmt: skip
    return HalfHour(T0 + timedelta(minutes=30 * i), imp, exp, ch, dis, pi, pe)


def test_the_bill_prices_each_half_hour_and_adds_the_standing_charge() -> None:
    b = bill([hh(0, 1000, 0, pi=0.10), hh(1, 0, 2000, pe=0.15)], standing_charge_per_day=0.48)
    assert math.isclose(b.cost, 0.10 - 0.30 + 0.48 * 2 / 48)
    assert (b.import_kwh, b.export_kwh, b.periods, b.gaps) == (1.0, 2.0, 2, 0)


def test_gaps_are_counted_not_priced_as_zero() -> None:
    b = bill([hh(0, None, 0), hh(1, 500, float("nan")), hh(2, 500, 0)])
    assert (b.periods, b.gaps) == (1, 2)
    assert math.isclose(b.cost, 0.5 * 0.30)


@pytest.mark.parametrize(
    ("period", "expected_import_wh", "expected_export_wh"),
    [
        # Charged 2 kWh from cheap import: without the battery that import was not needed.
        (hh(0, 2500, 0, ch=2000), 500.0, 0.0),
        # Discharged 1.5 kWh into the house: without it the house imports that.
        (hh(1, 200, 0, dis=1500), 1700.0, 0.0),
        # Charged 1 kWh from PV: without the battery that PV is exported.
        (hh(2, 0, 300, ch=1000), 0.0, 1300.0),
        # Discharging while exporting: without the battery the export is smaller.
        (hh(3, 0, 800, dis=500), 0.0, 300.0),
    ],
)
def test_without_the_battery_the_net_flow_loses_the_battery(
    period: HalfHour, expected_import_wh: float, expected_export_wh: float
) -> None:
    (cf,) = without_battery([period])
    assert (cf.grid_import_wh, cf.grid_export_wh) == (expected_import_wh, expected_export_wh)


def test_the_saving_is_the_counterfactual_bill_minus_the_real_one() -> None:
    night = hh(0, 5000, 0, ch=5000, pi=0.07)  # charge 5 kWh at 7p
    evening = hh(36, 0, 0, dis=5000, pi=0.35)  # cover the 35p peak from the battery
    # Without the battery: no night import; 5 kWh imported at 35p in the evening.
    assert math.isclose(saved([night, evening]), 5 * 0.35 - 5 * 0.07)
