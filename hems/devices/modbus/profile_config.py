"""Config of a profile-driven Modbus device (`type: modbus-profile`).

One entry has one role, as for SunSpec: a hybrid inverter is several entries with the same
host/port/unit_id and `role: pv`, `role: battery`, `role: grid`; they share one connection.
The profile, the role and the battery modes are checked against the shipped profile at
config time: a mode the device lacks is an error here, never improvised at run time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hems.core.assets import DeviceFacts
from hems.core.capabilities import BatteryMode
from hems.core.configbase import DeviceId, UnitId
from hems.core.readings import Role
from hems.devices.modbus.config import ModbusConnection
from hems.devices.modbus.profile import Profile, ProfileError, get_profile
from hems.errors import ConfigError


class ProfileDeviceConfig(ModbusConnection, DeviceFacts):
    type: Literal["modbus-profile"]
    id: DeviceId
    role: Role
    profile: str = Field(min_length=1, description="family name of a drivers/*.yaml profile")
    unit_id: UnitId | None = Field(default=None, description="default: the profile's unit id")
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    stale_after_polls: int = Field(default=3, ge=1, le=1000)
    battery_modes: list[BatteryMode] | None = Field(
        default=None, description="role battery: modes to offer (default: all the profile has)"
    )

    @model_validator(mode="after")
    def _fits_profile(self) -> ProfileDeviceConfig:
        try:
            profile = get_profile(self.profile)
        except ProfileError as exc:
            raise ValueError(f"profile: shipped profiles are broken: {exc}") from None
        except ConfigError as exc:
            raise ValueError(f"profile: {exc.problem}") from None
        if self.role not in profile.roles():
            offered = ", ".join(sorted(str(r) for r in profile.roles()))
            raise ValueError(f"role: profile {self.profile} has no {self.role} side ({offered})")
        if self.battery_modes is not None:
            if self.role is not Role.BATTERY:
                raise ValueError("battery_modes: only for role battery")
            lacking = [m for m in self.battery_modes if m not in profile.battery_modes]
            if lacking:
                offered = ", ".join(str(m) for m in profile.battery_modes) or "none"
                raise ValueError(
                    f"battery_modes: {self.profile} cannot do {', '.join(map(str, lacking))} "
                    f"(it offers: {offered})"
                )
        return self

    @property
    def profile_def(self) -> Profile:
        return get_profile(self.profile)

    @property
    def device_unit_id(self) -> int:
        return self.unit_id if self.unit_id is not None else self.profile_def.default_unit_id

    @property
    def modes(self) -> frozenset[BatteryMode]:
        if self.role is not Role.BATTERY:
            return frozenset()
        return frozenset(self.battery_modes or self.profile_def.battery_modes)
