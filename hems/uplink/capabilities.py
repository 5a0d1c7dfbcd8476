"""What the gateway tells the aggregator it can do (`up/capabilities`), derived from the
site's devices. Pure: the composition root passes the facts, nothing is read here."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

from hems.core.assets import DeviceRatings
from hems.core.readings import Role
from hems.uplink.messages import Asset, Capabilities

_NONE = DeviceRatings()
Control = Literal["none", "power_setpoint", "current_limit", "on_off", "curtail_pct"]


def describe_site(
    roles: Mapping[str, Role],
    ratings: Mapping[str, DeviceRatings],
    *,
    control_enabled: bool,
    curtailable: Collection[str] = frozenset(),
    import_limit_w: float | None = None,
    export_limit_w: float | None = None,
) -> Capabilities:
    """One asset per device (sorted by id), with its control kind and power range [W]
    (+ = consuming/charging). A device without the ratings its control needs is described
    as uncontrolled; with control disabled every asset is "none", though its range and
    capacity are still stated. A PV is "curtail_pct" only if it is in `curtailable` (the
    inverters the control loop can limit); any other PV is measured only."""
    return Capabilities(
        assets=[
            _asset(
                device_id,
                role,
                ratings.get(device_id, _NONE),
                control_enabled,
                device_id in curtailable,
            )
            for device_id, role in sorted(roles.items())
        ],
        import_limit_w=import_limit_w,
        export_limit_w=export_limit_w,
    )


def _asset(
    device_id: str, role: Role, r: DeviceRatings, control_enabled: bool, curtailable: bool
) -> Asset:
    kind: Control = "none"
    lo: float | None = None
    hi: float | None = None
    if role is Role.BATTERY and r.max_charge_w and r.max_discharge_w:
        kind, lo, hi = "power_setpoint", -r.max_discharge_w, r.max_charge_w
    elif role is Role.PV and r.rated_w:
        lo, hi = -r.rated_w, 0.0
        if curtailable:
            kind = "curtail_pct"
    elif role is Role.EV and r.max_power_w is not None:
        kind, lo, hi = "current_limit", 0.0, r.max_power_w
    elif role is Role.LOAD and r.load_power_w:
        kind, lo, hi = "on_off", 0.0, r.load_power_w
    return Asset(
        asset_id=device_id,
        role=role.value,  # type: ignore[arg-type]  # Role's values are Asset's roles
        control=kind if control_enabled else "none",
        min_power_w=lo,
        max_power_w=hi,
        energy_capacity_wh=r.capacity_wh,
    )
