"""The site quantities, defined once: every reader (web page, uplink telemetry, Home
Assistant) takes its site figures from `SITE_QUANTITIES`, in the entity-description style of
Home Assistant (one frozen row per sensor; a new figure is a new row).

Signs are those of the readings (hems.core.readings): grid + = import, battery + = charging,
PV + = producing, EV + = charging, load + = consuming.

Staleness, one rule for every figure: a role's figure is None when the role has no device, or
when any of its devices has no fresh value of the quantity (SiteState.role_total), because a
sum over the fresh subset would silently misstate the site (missing is never zero). A figure
derived from several roles (the house load) needs the grid; a role with no device at all
contributes 0 to it (there is nothing there), a role whose device is stale makes it None.

Energy counters are the devices' cumulative registers, summed per role and shown in kWh as
`total_increasing` (what Home Assistant's Energy dashboard reads). Only counters some device
really publishes are here: grid import/export (meters), PV energy (the inverter's lifetime
AC energy, published as energy_export_wh) and EV energy (OCPP Energy.Active.Import.Register,
published as energy_import_wh; some chargers reset it per session, which total_increasing
reads as a new meter cycle). No driver publishes battery charge/discharge energy, so there
is no battery counter here; the Home Assistant bridge integrates the batteries' power into
two counters of its own (hems.core.integrate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hems.core.readings import Quantity, Role
from hems.core.state import SiteState

StateClass = Literal["measurement", "total_increasing"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteQuantity:
    """One site figure. `device_class`/`state_class` are Home Assistant's sensor classes."""

    key: str  # the name everywhere: summary JSON, HA state JSON and unique_id
    name: str
    unit: str
    device_class: str
    state_class: StateClass
    value_fn: Callable[[SiteState], float | None]
    description: str = ""  # sign convention, shown on the page
    icon: str | None = None
    precision: int = 0  # decimals worth showing


def battery_soc_pct(state: SiteState) -> float | None:
    """The site's state of charge [%]: the mean over all batteries; None if any is stale.

    With several batteries the site figure stands for the energy stored on site, so every
    battery must be known: a mean over the fresh subset would report one battery's 90 % as
    the site's while the stale one may be empty. The mean is unweighted, which is exact for
    equal capacities; capacities live in the planner's config, not in SiteState. None also
    when there is no battery (unknown, never 0).
    """
    socs = [
        state.fresh_value(device_id, Quantity.SOC_PCT)
        for device_id, role in state.devices.items()
        if role is Role.BATTERY
    ]
    if not socs or any(v is None for v in socs):
        return None
    return sum(v for v in socs if v is not None) / len(socs)


def house_load_power_w(state: SiteState) -> float | None:
    """What the house takes besides the battery and the EVs [W]: grid + PV − battery − EV.

    Switchable loads (Role.LOAD) sit behind the grid meter and are part of it.
    """
    grid_w = state.role_total(Role.GRID)
    if grid_w is None:
        return None
    parts: dict[Role, float] = {}
    for role in (Role.PV, Role.BATTERY, Role.EV):
        value = _role_or_zero(state, role)
        if value is None:
            return None
        parts[role] = value
    return grid_w + parts[Role.PV] - parts[Role.BATTERY] - parts[Role.EV]


def _role_or_zero(state: SiteState, role: Role) -> float | None:
    """A role's power for a derived figure: 0 if the site has no such device."""
    if role not in state.devices.values():
        return 0.0
    return state.role_total(role)


def _power(role: Role) -> Callable[[SiteState], float | None]:
    return lambda s: s.role_total(role)


def _grid_part(sign: float) -> Callable[[SiteState], float | None]:
    """Import (sign +1) or export (sign −1) power: the net grid power's part, never negative."""

    def value(s: SiteState) -> float | None:
        net_w = s.role_total(Role.GRID)
        return None if net_w is None else max(0.0, sign * net_w)

    return value


def _energy_kwh(role: Role, quantity: Quantity) -> Callable[[SiteState], float | None]:
    def value(s: SiteState) -> float | None:
        wh = s.role_total(role, quantity)
        return None if wh is None else wh / 1000.0

    return value


def _power_row(
    key: str,
    name: str,
    value_fn: Callable[[SiteState], float | None],
    *,
    description: str = "",
    icon: str | None = None,
) -> SiteQuantity:
    return SiteQuantity(
        key=key,
        name=name,
        unit="W",
        device_class="power",
        state_class="measurement",
        value_fn=value_fn,
        description=description,
        icon=icon,
    )


def _energy_row(
    key: str, name: str, role: Role, quantity: Quantity, *, icon: str | None = None
) -> SiteQuantity:
    return SiteQuantity(
        key=key,
        name=name,
        unit="kWh",
        device_class="energy",
        state_class="total_increasing",
        value_fn=_energy_kwh(role, quantity),
        icon=icon,
        precision=2,
    )


SITE_QUANTITIES: tuple[SiteQuantity, ...] = (
    _power_row(
        "grid_power_w",
        "Grid power",
        _power(Role.GRID),
        description="+ import / − export",
        icon="mdi:transmission-tower",
    ),
    _power_row(
        "grid_import_power_w",
        "Grid import power",
        _grid_part(+1.0),
        icon="mdi:transmission-tower-import",
    ),
    _power_row(
        "grid_export_power_w",
        "Grid export power",
        _grid_part(-1.0),
        icon="mdi:transmission-tower-export",
    ),
    _power_row("pv_power_w", "PV power", _power(Role.PV), icon="mdi:solar-power"),
    _power_row(
        "battery_power_w",
        "Battery power",
        _power(Role.BATTERY),
        description="+ charging / − discharging",
        icon="mdi:home-battery",
    ),
    SiteQuantity(
        key="battery_soc_pct",
        name="Battery state of charge",
        unit="%",
        device_class="battery",
        state_class="measurement",
        value_fn=battery_soc_pct,
        precision=1,
    ),
    _power_row(
        "load_power_w",
        "House load power",
        house_load_power_w,
        description="without battery and EV",
        icon="mdi:home-lightning-bolt",
    ),
    _power_row("ev_power_w", "EV charging power", _power(Role.EV), icon="mdi:ev-station"),
    _energy_row(
        "grid_import_energy_kwh",
        "Grid import energy",
        Role.GRID,
        Quantity.ENERGY_IMPORT_WH,
        icon="mdi:transmission-tower-import",
    ),
    _energy_row(
        "grid_export_energy_kwh",
        "Grid export energy",
        Role.GRID,
        Quantity.ENERGY_EXPORT_WH,
        icon="mdi:transmission-tower-export",
    ),
    _energy_row(
        "pv_energy_kwh", "PV energy", Role.PV, Quantity.ENERGY_EXPORT_WH, icon="mdi:solar-power"
    ),
    _energy_row(
        "ev_energy_kwh",
        "EV charging energy",
        Role.EV,
        Quantity.ENERGY_IMPORT_WH,
        icon="mdi:ev-station",
    ),
)


def site_values(state: SiteState) -> dict[str, float | None]:
    """Every site figure by key, in table order; None when unknown or stale."""
    return {q.key: q.value_fn(state) for q in SITE_QUANTITIES}


__all__ = [
    "SITE_QUANTITIES",
    "SiteQuantity",
    "StateClass",
    "battery_soc_pct",
    "house_load_power_w",
    "site_values",
]
