"""Readings: one measured value of one quantity of one device, with its unit in its name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Quantity(StrEnum):
    """What a reading measures. The unit is the suffix of the name.

    Signs: grid power + = import; battery power + = charging; PV power + = producing;
    EV power + = charging; load power + = consuming.
    """

    POWER_W = "power_w"
    ENERGY_IMPORT_WH = "energy_import_wh"  # cumulative register
    ENERGY_EXPORT_WH = "energy_export_wh"  # cumulative register
    SOC_PCT = "soc_pct"
    VOLTAGE_V = "voltage_v"
    CURRENT_A = "current_a"
    CURRENT_L1_A = "current_l1_a"
    CURRENT_L2_A = "current_l2_a"
    CURRENT_L3_A = "current_l3_a"
    POWER_L1_W = "power_l1_w"
    POWER_L2_W = "power_l2_w"
    POWER_L3_W = "power_l3_w"
    FREQUENCY_HZ = "frequency_hz"
    TEMPERATURE_C = "temperature_c"
    SESSION_ENERGY_WH = "session_energy_wh"
    POWER_LIMIT_PCT = "power_limit_pct"

    @property
    def unit(self) -> str:
        return {
            "w": "W",
            "wh": "Wh",
            "pct": "%",
            "v": "V",
            "a": "A",
            "hz": "Hz",
            "c": "°C",
        }[self.value.rsplit("_", 1)[1]]


class Role(StrEnum):
    """What a device is to the site; the site view sums readings per role."""

    GRID = "grid"  # the meter at the connection point
    PV = "pv"
    BATTERY = "battery"
    EV = "ev"
    LOAD = "load"  # a metered or switchable load


@dataclass(frozen=True, slots=True)
class Reading:
    device_id: str
    quantity: Quantity
    value: float
    at: datetime  # aware UTC, when it was measured (from the injected clock)

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            # Missing is never zero and never NaN inside the site state: drop it at the edge.
            raise ValueError(f"{self.device_id}.{self.quantity}: value must be finite")
        if self.at.tzinfo is None:
            raise ValueError(f"{self.device_id}.{self.quantity}: timestamp must be aware")
