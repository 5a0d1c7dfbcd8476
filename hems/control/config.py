"""Config of the control loop (`control:` section).

Every field carries its unit in its name and its bounds. Per-device ratings and tuning are
not in this section: they are each `devices[]` entry's `rated_w`, `battery:`, `load:` and
`control:`, which the composition root hands over with `ControlConfig.with_devices`; a
device without its own tuning uses the section-wide default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from hems.core.assets import BatteryStaleFallback, ChargerStaleFallback, EvStrategy
from hems.core.configbase import DeviceId, Strict

ShedStep = Literal["ev", "battery-charge", "deferrable-loads", "battery-discharge"]
BatteryStrategy = Literal["plan", "self-consumption"]


class StageBudgets(Strict):
    """Time budget of each stage of one cycle [s]. A stage over budget is cut short."""

    snapshot_s: float = Field(default=0.1, gt=0, le=5)
    compute_s: float = Field(default=0.05, gt=0, le=5)
    write_s: float = Field(default=0.4, gt=0, le=5)


class EvSurplusConfig(Strict):
    """PV-surplus charging: thresholds and hysteresis timers."""

    start_surplus_w: float = Field(
        default=0.0, ge=-10000, le=10000, description="surplus above the minimum power to start"
    )
    stop_surplus_w: float = Field(
        default=-300.0,
        ge=-10000,
        le=10000,
        description="stop when the surplus falls below the minimum power by more than this",
    )
    start_delay_s: float = Field(default=60.0, ge=0, le=3600)
    stop_delay_s: float = Field(default=180.0, ge=0, le=3600)
    phase_switch_delay_s: float = Field(default=300.0, ge=0, le=3600)
    departure_margin_s: float = Field(
        default=1800.0, ge=0, le=86400, description="charge fast this long before it is needed"
    )


class G100Config(Strict):
    """Export limitation scheme timings (ENA EREC G100): correct within 15 s, never > 60 s."""

    correct_within_s: float = Field(default=15.0, gt=0, le=60)
    max_excursion_s: float = Field(default=60.0, gt=0, le=600)
    margin_w: float = Field(default=100.0, ge=0, le=5000, description="aim this far below")


class DeviceControlConfig(Strict):
    """One device's ratings and tuning as the control loop sees them, gathered by the
    composition root from the device's `devices[]` entry; unset tuning uses the section
    defaults."""

    max_charge_w: float | None = Field(default=None, gt=0, le=1e6, description="battery")
    max_discharge_w: float | None = Field(default=None, gt=0, le=1e6, description="battery")
    rated_w: float | None = Field(default=None, gt=0, le=1e6, description="PV: WMax")
    load_power_w: float | None = Field(default=None, gt=0, le=1e5, description="switchable load")
    deferrable: bool = True
    phase: int | None = Field(
        default=None, ge=1, le=3, description="phase of a one-phase device; unset: balanced"
    )
    ramp_w_per_s: float | None = Field(default=None, gt=0, le=100000)
    deadband_w: float | None = Field(default=None, ge=0, le=10000)
    write_timeout_s: float | None = Field(default=None, gt=0, le=10)
    battery_stale: BatteryStaleFallback | None = None
    charger_stale: ChargerStaleFallback | None = None
    ev_strategy: EvStrategy | None = None


class ControlConfig(Strict):
    enabled: bool = False
    cycle_s: float = Field(default=1.0, ge=0.5, le=10, description="control cycle period [s]")
    strategy: BatteryStrategy = "plan"
    ev_strategy: EvStrategy = "plan"
    deadband_w: float = Field(default=50.0, ge=0, le=10000)
    deadband_pct: float = Field(default=2.0, ge=0, le=50, description="PV limit deadband [%]")
    ramp_w_per_s: float = Field(
        default=5000.0, gt=0, le=100000, description="default rate limit per device [W/s]"
    )
    refresh_s: float = Field(
        default=20.0,
        ge=1,
        le=3600,
        description="re-send unchanged commands this often (well inside device revert timeouts)",
    )
    write_timeout_s: float = Field(default=0.5, gt=0, le=10)
    budgets: StageBudgets = Field(default_factory=StageBudgets)
    verify_after_s: float = Field(default=5.0, ge=0, le=600)
    verify_tolerance_w: float = Field(default=300.0, ge=0, le=10000)
    verify_failures: int = Field(default=3, ge=1, le=100, description="misses before flagging")
    shed_order: list[ShedStep] = Field(
        default_factory=lambda: ["ev", "battery-charge", "deferrable-loads", "battery-discharge"]
    )
    fuse_margin_a: float = Field(default=1.0, ge=0, le=50, description="aim this far below")
    battery_stale: BatteryStaleFallback = "idle"
    charger_stale: ChargerStaleFallback = "pause"
    ev_surplus: EvSurplusConfig = Field(default_factory=EvSurplusConfig)
    g100: G100Config = Field(default_factory=G100Config)
    override_max_s: float = Field(
        default=86400.0, gt=0, le=7 * 86400, description="longest allowed override expiry"
    )
    max_step_w: float = Field(
        default=50000.0,
        gt=0,
        le=1e6,
        description="a reading changing more than this between two cycles is implausible",
    )
    grid_meter_id: DeviceId | None = Field(
        default=None, description="which meter is the connection point if several claim it"
    )
    outage: bool = Field(default=False, description="declared outage: reserve may be used")
    ev_from_battery: bool = Field(
        default=False,
        description=(
            "let the home battery discharge into a charging EV; off (the default): while an "
            "EV draws, the battery covers at most the rest of the house and PV goes to the EV "
            "first (the safety guard may still discharge it to protect the fuse)"
        ),
    )
    # Per-device ratings and tuning, from the `devices[]` entries (never from this section).
    _devices: dict[str, DeviceControlConfig] = PrivateAttr(default_factory=dict)

    @field_validator("shed_order")
    @classmethod
    def _unique_steps(cls, steps: list[str]) -> list[str]:
        if len(set(steps)) != len(steps):
            raise ValueError("each step may appear once")
        return steps

    def with_devices(self, devices: Mapping[str, DeviceControlConfig]) -> ControlConfig:
        """This policy for these devices (a copy; the section itself is unchanged)."""
        copy = self.model_copy()
        copy._devices = dict(devices)
        return copy

    @property
    def devices(self) -> Mapping[str, DeviceControlConfig]:
        return self._devices

    def device(self, device_id: str) -> DeviceControlConfig:
        return self._devices.get(device_id) or DeviceControlConfig()

    def setting(self, device_id: str, name: str) -> Any:
        """The device's own `<name>` where set, else the section-wide `<name>` (read every
        cycle, so no per-device model is built for a device without its own tuning)."""
        entry = self._devices.get(device_id)
        value = None if entry is None else getattr(entry, name)
        return getattr(self, name) if value is None else value
