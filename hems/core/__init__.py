"""Domain types only, no I/O: readings and roles, device capabilities (Protocols), the site
state, plans, the clocks, the site and its limits (`site`), the facts a device entry states
once (`assets`), EV sessions (`ev`), the table of site quantities (`quantities`) and small
helpers every stage uses (`supervise`, `tasks`, `jsonsafe`, `localtime`, `configbase`)."""

from hems.core.assets import BatteryFacts, ControlOptions, DeviceFacts, EvNeeds, LoadFacts
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
from hems.core.ev import EvSession
from hems.core.plan import Plan, PlanSlot
from hems.core.quantities import SITE_QUANTITIES, SiteQuantity, site_values
from hems.core.readings import Quantity, Reading, Role
from hems.core.site import LimitsConfig, SiteConfig
from hems.core.state import Latest, SiteState

__all__ = [
    "SITE_QUANTITIES",
    "AcceleratedClock",
    "Battery",
    "BatteryControl",
    "BatteryFacts",
    "BatteryMode",
    "Clock",
    "ControlOptions",
    "DeviceFacts",
    "EvCharger",
    "EvNeeds",
    "EvSession",
    "EvState",
    "Latest",
    "LimitsConfig",
    "LoadFacts",
    "ManualClock",
    "Meter",
    "Plan",
    "PlanSlot",
    "PvInverter",
    "Quantity",
    "Reading",
    "RealClock",
    "Role",
    "SiteConfig",
    "SiteQuantity",
    "SiteState",
    "SwitchableLoad",
    "site_values",
]
