"""Domain types only, no I/O."""

from hems.core.capabilities import (
    Battery,
    BatteryControl,
    BatteryMode,
    EvCharger,
    EvState,
    Meter,
    PvInverter,
    SwitchableLoad,
)
from hems.core.clock import AcceleratedClock, Clock, ManualClock, RealClock
from hems.core.plan import Plan, PlanSlot
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import Latest, SiteState

__all__ = [
    "AcceleratedClock",
    "Battery",
    "BatteryControl",
    "BatteryMode",
    "Clock",
    "EvCharger",
    "EvState",
    "Latest",
    "ManualClock",
    "Meter",
    "Plan",
    "PlanSlot",
    "PvInverter",
    "Quantity",
    "Reading",
    "RealClock",
    "Role",
    "SiteState",
    "SwitchableLoad",
]
