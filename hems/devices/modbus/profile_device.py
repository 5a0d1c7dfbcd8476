"""A profile-driven Modbus device: polls the registers of its role, publishes readings,
runs the profile's write sequences for battery modes and controls.

One adapter per config entry (one role), like the SunSpec adapter. Each poll reads the role's
registers (plus the scale and direction registers they depend on) in coalesced block reads
through the shared endpoint, decodes them with the pure functions in `profile_decode`, and
publishes what decoded. A register that is bad (sentinel, NaN, missing) is left out and
logged once; a poll where nothing usable decoded counts as a miss, and after
`stale_after_polls` misses the device is marked down.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import structlog

from hems.core.capabilities import BatteryMode
from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.devices.modbus.engine import Endpoint, EndpointPool
from hems.devices.modbus.polled import PolledDevice
from hems.devices.modbus.profile import Profile, WriteStep, shipped_profiles
from hems.devices.modbus.profile_config import ProfileDeviceConfig
from hems.devices.modbus.profile_decode import (
    DecodeError,
    decode_all,
    decode_raw,
    encode_raw,
    encode_value,
)
from hems.errors import BadValue, DeviceError, NotSupported

log = structlog.get_logger(__name__)


def registers_for_role(profile: Profile, role: Role) -> list[str]:
    """Names to read for one role: its quantity registers, derived terms, and dependencies."""
    names: list[str] = []

    def add(name: str) -> None:
        if name in names:
            return
        reg = profile.registers[name]
        if reg.scale_register:
            add(reg.scale_register)
        if reg.sign_from:
            add(reg.sign_from.register_name)
        names.append(name)

    for name, reg in profile.registers.items():
        if reg.role is role and reg.quantity is not None:
            add(name)
    for d in profile.derived.values():
        if d.role is role:
            for term in [*d.add, *d.subtract]:
                add(term)
    return names


def read_plan(profile: Profile, names: Iterable[str]) -> dict[str, list[tuple[int, int]]]:
    """(address, count) ranges per table for the given registers."""
    plan: dict[str, list[tuple[int, int]]] = {}
    for name in names:
        reg = profile.registers[name]
        plan.setdefault(reg.table, []).append((reg.address, reg.width))
    return plan


def readings_for_role(
    profile: Profile, role: Role, values: dict[str, float | str], device_id: str, at: Any
) -> list[Reading]:
    out: list[Reading] = []
    seen: set[Quantity] = set()
    items: list[tuple[str, Quantity | None, Role | None]] = [
        (n, r.quantity, r.role) for n, r in profile.registers.items()
    ] + [(n, d.quantity, d.role) for n, d in profile.derived.items()]
    for name, quantity, reg_role in items:
        value = values.get(name)
        if quantity is None or reg_role is not role or not isinstance(value, float):
            continue
        if quantity in seen:
            continue  # the first source of a quantity wins (profiles list the best first)
        seen.add(quantity)
        out.append(Reading(device_id, quantity, value, at))
    return out


async def read_registers(
    endpoint: Endpoint, unit_id: int, profile: Profile, names: list[str]
) -> tuple[dict[str, float | str], dict[str, str]]:
    """Read and decode `names` in as few requests as the engine can coalesce."""
    words: dict[str, dict[int, int]] = {}
    for table, ranges in read_plan(profile, names).items():
        words[table] = await endpoint.read_ranges(unit_id, table, ranges)  # type: ignore[arg-type]
    return decode_all(profile, words, names)


async def match_profile(endpoint: Endpoint, unit_id: int) -> list[Profile]:
    """Profiles whose identification register answers as expected (for `hems scan`).

    Profiles identified by a text prefix come first: they are the most specific.
    """
    found: list[tuple[int, Profile]] = []
    for profile in shipped_profiles().values():
        ident = profile.identify
        if ident is None:
            continue
        reg = profile.registers[ident.register_name]
        try:
            words = await endpoint.read(unit_id, reg.table, reg.address, reg.width)  # type: ignore[arg-type]
        except DeviceError:
            continue
        try:
            raw = decode_raw(words, reg.type, profile.word_order_of(reg))
        except ValueError:
            continue
        if isinstance(raw, str):
            if ident.prefixes and any(raw.startswith(p) for p in ident.prefixes):
                found.append((0, profile))
            continue
        if ident.values:
            if raw in ident.values:
                found.append((0, profile))
            continue
        value, _ = decode_all(
            profile, {reg.table: dict(enumerate(words, reg.address))}, [ident.register_name]
        )
        v = value.get(ident.register_name)
        if isinstance(v, float) and ident.range and ident.range[0] <= v <= ident.range[1]:
            found.append((1, profile))
    return [p for _, p in sorted(found, key=lambda t: t[0])]


async def profile_snapshot(
    endpoint: Endpoint, unit_id: int, profile: Profile
) -> tuple[dict[str, float | str], dict[str, str]]:
    """Every register and derived value of a profile, decoded (for `hems scan`'s report).

    Registers the device refuses are reported in the errors, the rest still decode.
    """
    values: dict[str, float | str] = {}
    errors: dict[str, str] = {}
    for role in sorted(profile.roles()):
        got, bad = await read_registers(
            endpoint, unit_id, profile, registers_for_role(profile, role)
        )
        values.update(got)
        errors.update(bad)
    others = [n for n in profile.registers if n not in values and n not in errors]
    for name in others:
        try:
            got, bad = await read_registers(endpoint, unit_id, profile, [name])
        except DeviceError as exc:
            errors[name] = exc.reason
            continue
        values.update(got)
        errors.update(bad)
    return values, errors


class ProfileDevice(PolledDevice):
    """Polls one unit for one role through its profile. Base of the role classes below."""

    kind = "profile"
    cfg: ProfileDeviceConfig

    def __init__(
        self,
        cfg: ProfileDeviceConfig,
        pool: EndpointPool,
        state: SiteState,
        clock: Clock,
        profile: Profile | None = None,
    ) -> None:
        super().__init__(cfg, pool, state, clock)
        self.profile = profile or cfg.profile_def
        self.unit_id = cfg.device_unit_id
        self._names = registers_for_role(self.profile, self.role)
        self._bad: dict[str, str] = {}

    async def poll_once(self) -> list[Reading]:
        """Read, decode and convert; raises a DeviceError when nothing usable came back."""
        values, errors = await read_registers(
            self._endpoint, self.unit_id, self.profile, self._names
        )
        self._note_bad(errors)
        readings = readings_for_role(
            self.profile, self.role, values, self.device_id, self._clock.now()
        )
        if not readings:
            detail = "; ".join(f"{k}: {v}" for k, v in errors.items()) or "no quantities"
            raise BadValue(self.device_id, f"no usable value ({detail})")
        return readings

    def _note_bad(self, errors: dict[str, str]) -> None:
        for name, reason in errors.items():
            if name not in self._bad:
                log.warning(
                    "profile register bad", device=self.device_id, register=name, reason=reason
                )
        for name in set(self._bad) - set(errors):
            log.info("profile register recovered", device=self.device_id, register=name)
        self._bad = dict(errors)

    async def run_steps(self, what: str, steps: list[WriteStep], request_w: float) -> None:
        """Encode every step first (so a bad value writes nothing), then write in order."""
        writes: list[tuple[int, list[int]]] = []
        for step in steps:
            if step.when == "charge" and request_w < 0:
                continue
            if step.when == "discharge" and request_w >= 0:
                continue
            reg = self.profile.registers[step.register_name]
            order = self.profile.word_order_of(reg)
            try:
                if step.value is not None:
                    words = encode_raw(step.register_name, reg, step.value, order)
                else:
                    words = encode_value(
                        step.register_name, reg, _source(step.source, request_w), order
                    )
            except DecodeError as exc:
                raise BadValue(self.device_id, f"{what}: {exc}") from None
            writes.append((reg.address, words))
        async with self._control_lock:
            for address, words in writes:
                await self._endpoint.write(self.unit_id, address, words)


def _source(source: str | None, request: float) -> float:
    if source == "power_w" or source == "limit_pct":
        return request
    if source == "charge_power_w":
        return max(0.0, request)
    if source == "discharge_power_w":
        return max(0.0, -request)
    return abs(request)


class ProfileMeter(ProfileDevice):
    """Role grid or load. Implements `Meter`."""

    async def power_w(self) -> float:
        return self._fresh(Quantity.POWER_W)

    async def energy_import_wh(self) -> float:
        return self._fresh(Quantity.ENERGY_IMPORT_WH)

    async def energy_export_wh(self) -> float:
        return self._fresh(Quantity.ENERGY_EXPORT_WH)


class ProfileInverter(ProfileDevice):
    """Role pv without curtailment: implements the reading half of `PvInverter` only, so the
    control loop never counts on limiting it (the profile declares no `pv_limit`)."""

    async def power_w(self) -> float:
        return self._fresh(Quantity.POWER_W)


class ProfileCurtailableInverter(ProfileInverter):
    """Role pv whose profile declares `controls.pv_limit`. Implements `PvInverter`."""

    async def set_power_limit_pct(self, limit_pct: float) -> None:
        steps = self.profile.controls.get("pv_limit")
        if not steps:  # unreachable through `profile_device`; be safe anyway
            raise NotSupported(f"{self.device_id}: profile {self.profile.family} has no pv_limit")
        if not math.isfinite(limit_pct) or not 0 <= limit_pct <= 100:
            raise BadValue(self.device_id, f"limit_pct {limit_pct}: must be 0..100")
        await self.run_steps("pv_limit", steps, limit_pct)


class ProfileBattery(ProfileDevice):
    """Role battery without control. Implements `Battery`."""

    async def soc_pct(self) -> float:
        return self._fresh(Quantity.SOC_PCT)

    async def power_w(self) -> float:
        return self._fresh(Quantity.POWER_W)


class ProfileControllableBattery(ProfileBattery):
    """Role battery with profile modes. Implements `Battery` and `BatteryControl`."""

    @property
    def modes(self) -> frozenset[BatteryMode]:
        return self.cfg.modes

    async def set_mode(self, mode: BatteryMode, power_w: float = 0.0) -> None:
        if mode not in self.modes:
            raise NotSupported(f"{self.device_id}: battery mode {mode} is not offered")
        if not isinstance(power_w, int | float) or not math.isfinite(power_w):
            raise BadValue(self.device_id, f"power_w {power_w!r}: not a finite number")
        await self.run_steps(f"mode {mode}", self.profile.modes[mode], float(power_w))
        log.info("profile battery mode set", device=self.device_id, mode=str(mode), power_w=power_w)


class ProfileRelay(ProfileMeter):
    """Role load with relay controls. Implements `SwitchableLoad` and `Meter`."""

    async def set_on(self, on: bool) -> None:
        key = "relay_on" if on else "relay_off"
        steps = self.profile.controls.get(key)  # type: ignore[call-overload]
        if not steps:
            raise NotSupported(f"{self.device_id}: profile {self.profile.family} has no {key}")
        await self.run_steps(key, steps, 0.0)

    async def is_on(self) -> bool:
        return self._fresh(Quantity.POWER_W) > 0


def profile_device(
    cfg: ProfileDeviceConfig, pool: EndpointPool, state: SiteState, clock: Clock
) -> ProfileDevice:
    """The adapter for a `modbus-profile` entry (`ModbusService` builds these itself)."""
    if cfg.role is Role.PV:
        # Curtailable only where the profile says how: the export limit must not count on
        # an inverter that would raise NotSupported.
        if cfg.profile_def.controls.get("pv_limit"):
            return ProfileCurtailableInverter(cfg, pool, state, clock)
        return ProfileInverter(cfg, pool, state, clock)
    if cfg.role is Role.BATTERY:
        if cfg.modes:
            return ProfileControllableBattery(cfg, pool, state, clock)
        return ProfileBattery(cfg, pool, state, clock)
    if cfg.role is Role.LOAD and cfg.profile_def.controls.get("relay_on"):
        return ProfileRelay(cfg, pool, state, clock)
    return ProfileMeter(cfg, pool, state, clock)
