"""Config of Modbus devices (SunSpec and profile-driven).

`ModbusConnection` holds how a device is reached; every Modbus device entry (SunSpec or a
profile) subclasses it, and devices with the same endpoint key share one connection (they
must then agree on the endpoint settings; `EndpointPool.get` says which field differs).

Roles: one entry has ONE role. A hybrid inverter (PV + battery behind one unit id) is two
entries with the same host/port/unit_id, e.g. `role: pv` and `role: battery`; they share the
one connection and each reads only the models it needs (`sunspec_hybrid` splits PV from
battery). This keeps `SiteState` simple (one role per device id) and lets the control loop
address the PV and battery sides separately.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hems.core.assets import DeviceFacts
from hems.core.capabilities import BatteryMode
from hems.core.configbase import DeviceId, Port, Strict, UnitId
from hems.core.readings import Role
from hems.devices.modbus.engine import EndpointSpec

SUNSPEC_BATTERY_MODES: tuple[BatteryMode, ...] = (
    BatteryMode.NORMAL,
    BatteryMode.IDLE,
    BatteryMode.HOLD_DISCHARGE,
    BatteryMode.HOLD_CHARGE,
    BatteryMode.FORCE_CHARGE,
    BatteryMode.POWER_SETPOINT,
)


class ProxyConfig(Strict):
    """Serve this endpoint to other local Modbus TCP clients through hems' one connection."""

    listen_host: str = "127.0.0.1"
    listen_port: Port = 5502
    allow_writes: bool = Field(
        default=False,
        description="forward fc6/fc16 writes (off: another controller could fight hems)",
    )


class ModbusConnection(Strict):
    """How to reach a Modbus device: TCP, RTU on a serial port, or RTU over a TCP gateway."""

    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = "tcp"
    host: str | None = Field(default=None, min_length=1, description="tcp / rtu-over-tcp")
    port: Port = 502
    serial_port: str | None = Field(default=None, min_length=1, description="rtu: /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=1200, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    handle_local_echo: bool = Field(
        default=False,
        description="rtu: drop the echo of our own requests (RS-485 adapters that echo)",
    )
    unit_id: UnitId = 1
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    inter_request_delay_s: float = Field(default=0.0, ge=0, le=10)
    backoff_initial_s: float = Field(default=1.0, gt=0, le=600)
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600)
    proxy: ProxyConfig | None = None

    @model_validator(mode="after")
    def _reachable(self) -> ModbusConnection:
        if self.transport == "rtu":
            if self.serial_port is None:
                raise ValueError("serial_port: required when transport is rtu")
            if self.proxy is not None:
                raise ValueError("proxy: only for tcp endpoints")
        elif self.host is None:
            raise ValueError(f"host: required when transport is {self.transport}")
        if self.handle_local_echo and self.transport != "rtu":
            # A TCP (or serial-gateway) link never echoes; the gateway handles its own bus.
            raise ValueError(
                f"handle_local_echo: only for transport rtu (a serial port), not {self.transport}"
            )
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s: must be >= backoff_initial_s")
        return self

    def endpoint_spec(self) -> EndpointSpec:
        return EndpointSpec(
            transport=self.transport,
            host=self.host,
            port=self.port,
            serial_port=self.serial_port,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            bytesize=self.bytesize,
            handle_local_echo=self.handle_local_echo,
            timeout_s=self.timeout_s,
            inter_request_delay_s=self.inter_request_delay_s,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
        )


class SunSpecDeviceConfig(ModbusConnection, DeviceFacts):
    type: Literal["sunspec"]
    id: DeviceId
    role: Role
    base_address: Literal[0, 40000, 50000] | None = Field(
        default=None, description="skip discovery and use this SunSpec base"
    )
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    stale_after_polls: int = Field(default=3, ge=1, le=1000)
    invert_power: bool = Field(
        default=False, description="flip the sign of power readings (a meter fitted backwards)"
    )
    control_revert_s: int = Field(
        default=120,
        ge=0,
        le=65535,
        description="revert timeout written with every setpoint (0 = never revert)",
    )
    battery_modes: list[BatteryMode] | None = Field(
        default=None, description="role battery: modes to offer (default: all 124 can do)"
    )
    hybrid: bool | None = Field(
        default=None,
        description=(
            "PV and battery behind this inverter's one AC output (default: yes when the unit "
            "has an inverter model and a storage model 124/713/802); false = an AC-coupled "
            "battery inverter, whose AC output is the battery's"
        ),
    )

    @model_validator(mode="after")
    def _role_fits(self) -> SunSpecDeviceConfig:
        if self.role is Role.EV:
            raise ValueError("role: ev is not a SunSpec role (use grid, pv, battery or load)")
        if self.hybrid is not None and self.role not in (Role.PV, Role.BATTERY):
            raise ValueError(f"hybrid: only for role pv or battery, not {self.role}")
        if self.battery_modes is not None:
            if self.role is not Role.BATTERY:
                raise ValueError("battery_modes: only for role battery")
            for mode in self.battery_modes:
                if mode not in SUNSPEC_BATTERY_MODES:
                    raise ValueError(f"battery_modes: {mode} cannot be done through model 124")
        return self

    @property
    def modes(self) -> frozenset[BatteryMode]:
        if self.role is not Role.BATTERY:
            return frozenset()
        return frozenset(self.battery_modes or SUNSPEC_BATTERY_MODES)
