"""Config of Modbus devices (SunSpec and profile-driven)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hems.configbase import DeviceId, Port, Strict, UnitId
from hems.core.readings import Role


class SunSpecDeviceConfig(Strict):
    type: Literal["sunspec"]
    id: DeviceId
    role: Role
    host: str = Field(min_length=1)
    port: Port = 502
    unit_id: UnitId = 1
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    stale_after_polls: int = Field(default=3, ge=1, le=1000)
