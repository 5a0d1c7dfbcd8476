"""Manual overrides: a target per device until an expiry, still subject to the guard.

A target is checked against the device's range when it is set (W for a battery, from full
discharge to full charge; W for a charger up to its maximum; % for PV; on/off for a
switchable load) and dropped once its expiry passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from hems.control.config import ControlConfig
from hems.control.model import SiteSpec
from hems.control.problems import log
from hems.control.strategies import Override
from hems.core.capabilities import BatteryMode
from hems.core.site import LimitsConfig
from hems.errors import BadValue


class Overrides:
    """Owns the overrides in force, by device."""

    def __init__(
        self, cfg: ControlConfig, limits: LimitsConfig, spec: SiteSpec, device_ids: Iterable[str]
    ) -> None:
        self._cfg = cfg
        self._limits = limits
        self._spec = spec
        self._device_ids = frozenset(device_ids)
        self._by_device: dict[str, Override] = {}

    @property
    def by_device(self) -> dict[str, Override]:
        """The overrides in force (for the strategies; change them through this class)."""
        return self._by_device

    def set(
        self, device_id: str, target: float | bool, expires_at: datetime, now: datetime
    ) -> None:
        """Raises BadValue naming the device and the reason if the target is out of range."""
        spec = self._spec
        if device_id not in self._device_ids:
            raise BadValue(device_id, "override: no such controllable device")
        if expires_at.tzinfo is None:
            raise BadValue(device_id, "override: expires_at must be timezone-aware")
        horizon_s = (expires_at - now).total_seconds()
        if horizon_s <= 0:
            raise BadValue(device_id, "override: expires_at is in the past")
        if horizon_s > self._cfg.override_max_s:
            raise BadValue(
                device_id, f"override: expiry more than {self._cfg.override_max_s:.0f} s ahead"
            )
        if device_id in spec.loads:
            if not isinstance(target, bool):
                raise BadValue(device_id, "override: a switchable load takes true or false")
        else:
            if isinstance(target, bool) or not isinstance(target, int | float):
                raise BadValue(device_id, "override: target must be a number")
            if not math.isfinite(target):
                raise BadValue(device_id, "override: target must be finite")
            lo, hi, unit = self._range(device_id)
            if not lo <= target <= hi:
                raise BadValue(
                    device_id, f"override: target {target:g} {unit} outside {lo:g}..{hi:g} {unit}"
                )
        self._by_device[device_id] = Override(device_id, target, expires_at)
        log.info("override set", device=device_id, target=target, expires_at=expires_at.isoformat())

    def set_battery_mode(
        self,
        device_id: str,
        mode: BatteryMode,
        expires_at: datetime,
        now: datetime,
        power_w: float = 0.0,
    ) -> None:
        """Hold a battery in one of the modes it supports until `expires_at` (the guard still
        applies: reserve, fuse, export). Raises BadValue naming the device and the reason."""
        battery = self._spec.batteries.get(device_id)
        if battery is None:
            raise BadValue(device_id, "mode: not a controllable battery")
        if mode not in battery.modes:
            offered = ", ".join(sorted(str(m) for m in battery.modes))
            raise BadValue(device_id, f"mode: {mode} is not offered by this battery ({offered})")
        self.set(device_id, power_w, expires_at, now)
        self._by_device[device_id] = Override(device_id, power_w, expires_at, mode)
        log.info("battery mode override", device=device_id, mode=str(mode))

    def clear(self, device_id: str) -> None:
        if self._by_device.pop(device_id, None) is not None:
            log.info("override cleared", device=device_id)

    def expire(self, at: datetime) -> None:
        """Drop the overrides whose expiry has come."""
        for d, o in list(self._by_device.items()):
            if o.expires_at <= at:
                del self._by_device[d]
                log.info("override expired", device=d)

    def status(self) -> dict[str, dict[str, float | bool | str | None]]:
        return {
            d: {
                "target": o.target,
                "mode": None if o.mode is None else str(o.mode),
                "expires_at": o.expires_at.isoformat(),
            }
            for d, o in self._by_device.items()
        }

    def _range(self, device_id: str) -> tuple[float, float, str]:
        spec = self._spec
        v = self._limits.voltage_v
        if device_id in spec.batteries:
            b = spec.batteries[device_id]
            return -b.max_discharge_w, b.max_charge_w, "W"
        if device_id in spec.chargers:
            return 0.0, spec.chargers[device_id].max_power_w(v), "W"
        return 0.0, 100.0, "%"
