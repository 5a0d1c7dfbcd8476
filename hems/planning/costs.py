"""What the energy cost, and what hems saved: pure arithmetic over half-hour energies.

The bill of a period is import kWh × import price − export kWh × export price, per half hour,
plus the standing charge per day. The counterfactual "without hems" keeps the same tariff and
the same house, PV and EV, and takes the battery out: each half hour's net grid flow without
the battery is the metered net flow minus the battery's net charge (+ charging, − discharging),
imported when positive and exported when negative. What is not counted, and said so on the
page (METHOD): EV charging moved in time (it stays where hems put it), the value of energy
still stored at the end of the period (a battery charged tonight for tomorrow shows as a cost
today), curtailment, and flows that cancel inside one half hour (the metered import and
export are netted in the counterfactual only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

METHOD = (
    "same tariff, same house, PV and EV; without the battery: each half hour's net grid flow "
    "minus the battery's net charge. EV charging moved in time is not counted, and energy "
    "still in the battery at the end of the period is not credited."
)


@dataclass(frozen=True, slots=True)
class HalfHour:
    start: datetime
    grid_import_wh: float | None  # metered; None: not measured (a gap)
    grid_export_wh: float | None
    battery_charge_wh: float = 0.0  # + into the battery
    battery_discharge_wh: float = 0.0  # out of the battery (positive number)
    import_per_kwh: float = 0.0
    export_per_kwh: float = 0.0


@dataclass(frozen=True, slots=True)
class Bill:
    cost: float  # currency; standing charge included
    import_kwh: float
    export_kwh: float
    periods: int  # half hours counted
    gaps: int  # half hours without a meter reading (not in the sums)


def bill(periods: Sequence[HalfHour], standing_charge_per_day: float = 0.0) -> Bill:
    """The metered bill of `periods` (gaps are skipped and counted)."""
    cost = imp = exp = 0.0
    counted = gaps = 0
    for p in periods:
        if not _known(p.grid_import_wh) or not _known(p.grid_export_wh):
            gaps += 1
            continue
        assert p.grid_import_wh is not None and p.grid_export_wh is not None
        imp += p.grid_import_wh / 1000
        exp += p.grid_export_wh / 1000
        cost += p.grid_import_wh / 1000 * p.import_per_kwh
        cost -= p.grid_export_wh / 1000 * p.export_per_kwh
        counted += 1
    cost += standing_charge_per_day * counted / 48
    return Bill(cost, imp, exp, counted, gaps)


def without_battery(periods: Sequence[HalfHour]) -> list[HalfHour]:
    """The same half hours as if the battery had been idle (see the module docstring)."""
    out = []
    for p in periods:
        if not _known(p.grid_import_wh) or not _known(p.grid_export_wh):
            out.append(p)
            continue
        assert p.grid_import_wh is not None and p.grid_export_wh is not None
        net_wh = p.grid_import_wh - p.grid_export_wh
        net_wh -= p.battery_charge_wh - p.battery_discharge_wh
        out.append(
            HalfHour(
                p.start,
                max(0.0, net_wh),
                max(0.0, -net_wh),
                0.0,
                0.0,
                p.import_per_kwh,
                p.export_per_kwh,
            )
        )
    return out


def saved(periods: Sequence[HalfHour]) -> float:
    """What the battery's timing saved against the counterfactual [currency] (standing charge
    cancels out)."""
    return bill(without_battery(periods)).cost - bill(periods).cost


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
