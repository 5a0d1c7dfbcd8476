"""Config of switchable loads over local HTTP: Shelly Gen2+ (`type: shelly`), Tasmota
(`type: tasmota`) and an SG-Ready heat pump driven through two such relays (`type: sg-ready`).

A Shelly or Tasmota entry is one relay channel with its power meter; with `load:` facts it is
a deferrable load the planner schedules and the control loop switches.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from hems.core.assets import DeviceFacts
from hems.core.configbase import DeviceId, Port, Strict
from hems.core.readings import Role

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def check_host(value: str) -> str:
    """A bare host name or IP address: no scheme, port or path (those have their own keys)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is not a host name or IP address (no http://, :port or /path)")
    return value


class HttpRelay(Strict):
    """How one relay channel is reached over local HTTP."""

    host: str = Field(description="host name or IP address of the relay")
    port: Port = 80
    timeout_s: float = Field(default=2.0, gt=0, le=30, description="per HTTP request")

    @field_validator("host")
    @classmethod
    def _host_shape(cls, value: str) -> str:
        return check_host(value)


class ShellyRelay(HttpRelay):
    """A Shelly Gen2+ switch channel, local RPC (`/rpc/Switch.*`)."""

    protocol: Literal["shelly"] = "shelly"
    channel: int = Field(default=0, ge=0, le=3, description="Switch id, 0..3")
    password: SecretStr | None = Field(
        default=None, description="digest auth of user admin, when the device has a password"
    )


class TasmotaRelay(HttpRelay):
    """A Tasmota relay, HTTP commands (`/cm?cmnd=Power1 On`)."""

    protocol: Literal["tasmota"] = "tasmota"
    channel: int = Field(default=1, ge=1, le=8, description="relay number, Power1..Power8")
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None


class _SwitchEntry(DeviceFacts):
    id: DeviceId
    role: Role = Role.LOAD
    poll_interval_s: float = Field(default=2.0, gt=0, le=3600)
    stale_after_polls: int = Field(default=3, ge=1, le=1000)
    on_threshold_w: float = Field(
        default=10.0,
        ge=0,
        le=10000,
        description="measured power above this means the load is on, whatever the relay says",
    )

    @model_validator(mode="after")
    def _is_load(self) -> _SwitchEntry:
        if self.role is not Role.LOAD:
            raise ValueError(f"role: a switch is role load (not {self.role})")
        return self


class ShellyConfig(_SwitchEntry, ShellyRelay):
    type: Literal["shelly"]


class TasmotaConfig(_SwitchEntry, TasmotaRelay):
    type: Literal["tasmota"]


RelayConfig = Annotated[ShellyRelay | TasmotaRelay, Field(discriminator="protocol")]


class SgReadyConfig(DeviceFacts):
    """A heat pump's SG-Ready input through two relays.

    SG-Ready state (relay 1, relay 2): 1 blocked (1, 0), 2 normal (0, 0), 3 recommended on
    (0, 1), 4 forced on (1, 1). The control loop sees a switchable load: on = `on_state`
    (3 by default; 4 forces the compressor), off = `off_state` (2, normal: the heat pump's own
    control; 1 blocks it, which risks comfort and legionella cycles, so it is opt-in).
    """

    type: Literal["sg-ready"]
    id: DeviceId
    role: Role = Role.LOAD
    relay1: RelayConfig
    relay2: RelayConfig
    on_state: Literal[3, 4] = Field(default=3, description="SG-Ready state for on: 3 or 4 forced")
    off_state: Literal[1, 2] = Field(default=2, description="state for off: 2 normal or 1 blocked")

    @model_validator(mode="after")
    def _two_relays(self) -> SgReadyConfig:
        if self.role is not Role.LOAD:
            raise ValueError(f"role: an SG-Ready heat pump is role load (not {self.role})")
        a, b = self.relay1, self.relay2
        if (a.protocol, a.host, a.port, a.channel) == (b.protocol, b.host, b.port, b.channel):
            raise ValueError("relay2: must be another relay channel than relay1")
        return self


SwitchConfig = ShellyConfig | TasmotaConfig | SgReadyConfig
