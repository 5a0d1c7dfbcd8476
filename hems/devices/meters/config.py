"""Config of smart-meter entries: DSMR P1 (`type: p1`) and the GB Glow CAD (`type: glow-mqtt`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from hems.core.configbase import DeviceId, Port, Strict
from hems.core.readings import Role

DsmrVersion = Literal[
    "2.2", "3", "4", "4+", "5", "5B", "5L", "5S", "Q3D", "ISKRA_IE", "5EONHU", "SAGEMCOM_T210_D_R"
]


class IntervalSettings(Strict):
    """Half-hourly import/export from the cumulative registers (settlement periods, UTC)."""

    enabled: bool = True
    fresh_s: float = Field(
        default=60.0, gt=0, le=1800, description="a boundary read within this many s is actual"
    )
    missing_after_s: float = Field(
        default=300.0, gt=0, le=86400, description="write 'missing' this long after a period"
    )


class P1MeterConfig(Strict):
    type: Literal["p1"]
    id: DeviceId
    role: Role = Role.GRID
    port: str = Field(
        min_length=1, description="serial device (/dev/ttyUSB0) or socket://host:port"
    )
    dsmr_version: DsmrVersion = "5"
    stale_after_s: float = Field(default=10.0, gt=0, le=3600)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)
    intervals: IntervalSettings = Field(default_factory=IntervalSettings)

    @field_validator("port")
    @classmethod
    def _port_shape(cls, value: str) -> str:
        if value.startswith("socket://"):
            host, _, port = value.removeprefix("socket://").rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError("socket URL must be socket://HOST:PORT with PORT 1..65535")
        elif not value.startswith("/"):
            raise ValueError("must be a serial device path (/dev/…) or socket://HOST:PORT")
        return value


class GlowMeterConfig(Strict):
    type: Literal["glow-mqtt"]
    id: DeviceId
    role: Role = Role.GRID
    host: str = Field(min_length=1, description="the MQTT broker the CAD publishes to")
    port: Port = 1883
    username: str | None = None
    password: SecretStr | None = None
    topic_prefix: str = Field(default="glow", pattern=r"^[^#+]+$")
    cad_id: str = Field(
        default="+", pattern=r"^[^/#]+$", description="the CAD's id in the topic; + = any"
    )
    stale_after_s: float = Field(default=60.0, gt=0, le=3600)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    intervals: IntervalSettings = Field(default_factory=lambda: IntervalSettings(fresh_s=120.0))

    @property
    def topic(self) -> str:
        return f"{self.topic_prefix}/{self.cad_id}/SENSOR/electricitymeter"


MeterConfig = P1MeterConfig | GlowMeterConfig
