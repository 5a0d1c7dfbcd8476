"""A SunSpec device: polls its models, publishes readings, takes setpoints.

One adapter per config entry (one role). Each poll reads every model the role needs in one
coalesced pass, decodes it, converts it to hems readings (signs converted from SunSpec's
generator convention) and publishes them. A failed poll publishes nothing; after
`stale_after_polls` failures in a row the device is marked down. Transitions are logged,
not every failure.

Setpoints always start from a fresh read of the control model (for its scale factors and
ratings), so nothing is ever written from a stale or bad value.

SunSpec conventions assumed (the spec's own):
* inverter models 10x/11x and DER 701: W > 0 = AC power out of the unit (generation). For an
  AC-coupled battery inverter (`hybrid: false`) that is discharging, hence battery power = -W.
  On a hybrid (inverter + storage models, the default reading of such a unit) the AC output
  carries PV too: PV and battery power come from `sunspec_hybrid.split_hybrid` instead.
* battery 802 W: > 0 = discharging (generator convention, as 701), so battery power = -W.
* meter models 20x/21x: W > 0 = power flowing in at the meter (import / consumption).
`invert_power: true` flips a device whose installation says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime

import structlog

from hems.core.capabilities import BatteryMode
from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.devices.modbus.config import SunSpecDeviceConfig
from hems.devices.modbus.engine import EndpointPool, ModbusRejected
from hems.devices.modbus.polled import PolledDevice
from hems.devices.modbus.sunspec import (
    BASE_ADDRESSES,
    INVERTER_MODELS,
    METER_MODELS,
    ModelData,
    ModelLoc,
    ModelMoved,
    NotSunSpec,
    SunSpecMap,
    discover,
    encode_point,
    read_models,
)
from hems.devices.modbus.sunspec_hybrid import (
    MPPT_MODEL,
    STORAGE_MODELS,
    is_hybrid,
    split_hybrid,
)
from hems.errors import BadValue, NotSupported

log = structlog.get_logger(__name__)

BATTERY_MODELS = STORAGE_MODELS
LIMIT_MODELS = (123, 704)

# (point name, quantity) for optional extras; a bad/absent one is simply not published.
_INVERTER_EXTRAS = (
    ("PhVphA", Quantity.VOLTAGE_V),
    ("A", Quantity.CURRENT_A),
    ("Hz", Quantity.FREQUENCY_HZ),
    ("TmpCab", Quantity.TEMPERATURE_C),
)
_DER_EXTRAS = (
    ("LNV", Quantity.VOLTAGE_V),
    ("A", Quantity.CURRENT_A),
    ("Hz", Quantity.FREQUENCY_HZ),
    ("TmpCab", Quantity.TEMPERATURE_C),
)
_METER_EXTRAS = (
    ("PhVphA", Quantity.VOLTAGE_V),
    ("A", Quantity.CURRENT_A),
    ("AphA", Quantity.CURRENT_L1_A),
    ("AphB", Quantity.CURRENT_L2_A),
    ("AphC", Quantity.CURRENT_L3_A),
    ("Hz", Quantity.FREQUENCY_HZ),
)
_METER_PHASE_POWER = (
    ("WphA", Quantity.POWER_L1_W),
    ("WphB", Quantity.POWER_L2_W),
    ("WphC", Quantity.POWER_L3_W),
)


def models_for_role(role: Role, smap: SunSpecMap, hybrid: bool | None = None) -> list[ModelLoc]:
    """Which models a poll reads for this role (the first present of each kind)."""
    kinds: list[tuple[int, ...]]
    split = is_hybrid(smap.ids, hybrid)
    if role is Role.PV:
        kinds = (
            [INVERTER_MODELS, (MPPT_MODEL,), LIMIT_MODELS]
            if split
            else [
                INVERTER_MODELS,
                LIMIT_MODELS,
            ]
        )
    elif role is Role.BATTERY:
        kinds = [(802,), (713,), (124,), INVERTER_MODELS]
        if split:
            kinds.append((MPPT_MODEL,))
    else:
        kinds = [METER_MODELS]
    return [loc for kind in kinds if (loc := smap.find(*kind)) is not None]


def readings_from_models(
    role: Role,
    models: dict[int, ModelData],
    device_id: str,
    at_utc: datetime,
    invert_power: bool = False,
    hybrid: bool | None = None,
) -> list[Reading]:
    """Convert decoded models to readings with hems signs. Pure.

    Raises `BadValue` if the role's main quantity is missing or bad: then nothing of this
    poll is used. `hybrid`: the unit's split as decided on its whole map (None: decide from
    `models`). On a hybrid (`sunspec_hybrid.is_hybrid`) PV and battery power come from
    `split_hybrid`, never from the AC output alone; a hybrid's PV without model 160 is a
    `BadValue` (no PV figure rather than a wrong one).
    """
    out: list[Reading] = []
    sign = -1.0 if invert_power else 1.0
    split = split_hybrid(models) if is_hybrid(list(models), hybrid) else None

    def add(quantity: Quantity, value: float | None) -> None:
        if value is not None:
            out.append(Reading(device_id, quantity, value, at_utc))

    def extras(data: ModelData, table: Iterable[tuple[str, Quantity]], factor: float = 1.0) -> None:
        for name, quantity in table:
            v = data.number(name)
            add(quantity, None if v is None else v * factor)

    if role is Role.PV and split is not None:
        if split.pv_w is None:
            raise BadValue(device_id, "; ".join(split.notes) or "hybrid: no PV figure")
        add(Quantity.POWER_W, sign * split.pv_w)
        add(Quantity.ENERGY_EXPORT_WH, split.pv_energy_wh)
        inv = _first(models, INVERTER_MODELS)
        if inv is not None:  # the AC current is PV's and the battery's: not the PV's
            table = _DER_EXTRAS if inv.model_id == 701 else _INVERTER_EXTRAS
            extras(inv, [e for e in table if e[0] != "A"])
        add(Quantity.POWER_LIMIT_PCT, _limit_pct(models))
    elif role is Role.PV:
        inv = _first(models, INVERTER_MODELS)
        if inv is None:
            raise BadValue(device_id, f"no inverter model (one of {INVERTER_MODELS})")
        add(Quantity.POWER_W, sign * inv.require(device_id, "W"))
        if inv.model_id == 701:
            add(Quantity.ENERGY_EXPORT_WH, inv.number("TotWhInj"))
            extras(inv, _DER_EXTRAS)
        else:
            add(Quantity.ENERGY_EXPORT_WH, inv.number("WH"))
            extras(inv, _INVERTER_EXTRAS)
        add(Quantity.POWER_LIMIT_PCT, _limit_pct(models))
    elif role is Role.BATTERY:
        soc = None
        for mid, name in ((802, "SoC"), (713, "SoC"), (124, "ChaState")):
            if mid in models:
                soc = models[mid].require(device_id, name)
                break
        if soc is None:
            raise BadValue(device_id, "no state of charge: none of models 802, 713, 124")
        if not 0.0 <= soc <= 100.0:
            raise BadValue(device_id, f"state of charge {soc} % outside 0..100")
        add(Quantity.SOC_PCT, soc)
        power = None
        if split is not None:
            power = split.battery_w  # never the AC output: it carries the PV too
        elif 802 in models and models[802].number("W") is not None:
            power = -models[802].require(device_id, "W")
        elif (inv := _first(models, INVERTER_MODELS)) is not None:
            power = -inv.require(device_id, "W")  # an AC-coupled battery inverter
        add(Quantity.POWER_W, None if power is None else sign * power)
        if 802 in models:
            add(Quantity.VOLTAGE_V, models[802].number("V"))
            current = models[802].number("A")  # + discharging, like W
            add(Quantity.CURRENT_A, None if current is None else -sign * current)
    else:
        meter = _first(models, METER_MODELS)
        if meter is None:
            raise BadValue(device_id, f"no meter model (one of {METER_MODELS})")
        add(Quantity.POWER_W, sign * meter.require(device_id, "W"))
        add(Quantity.ENERGY_IMPORT_WH, meter.number("TotWhImp"))
        add(Quantity.ENERGY_EXPORT_WH, meter.number("TotWhExp"))
        extras(meter, _METER_EXTRAS)
        extras(meter, _METER_PHASE_POWER, sign)
    return out


def _first(models: dict[int, ModelData], ids: Iterable[int]) -> ModelData | None:
    for mid in ids:
        if mid in models:
            return models[mid]
    return None


def _limit_pct(models: dict[int, ModelData]) -> float | None:
    if 123 in models:
        m = models[123]
        enabled, pct = m.number("WMaxLim_Ena"), m.number("WMaxLimPct")
    elif 704 in models:
        m = models[704]
        enabled, pct = m.number("WMaxLimPctEna"), m.number("WMaxLimPct")
    else:
        return None
    if enabled is None:
        return None
    return 100.0 if enabled != 1 else pct


class SunSpecDevice(PolledDevice):
    """Polls one SunSpec unit for one role; base of the role-specific classes below."""

    kind = "sunspec"
    cfg: SunSpecDeviceConfig

    def __init__(
        self, cfg: SunSpecDeviceConfig, pool: EndpointPool, state: SiteState, clock: Clock
    ) -> None:
        super().__init__(cfg, pool, state, clock)
        self._map: SunSpecMap | None = None
        self._noted: set[str] = set()
        self._on_found: list[Callable[[SunSpecDevice], object]] = []

    def on_map_found(self, listener: Callable[[SunSpecDevice], object]) -> None:
        """Call `listener(self)` each time the unit's model map is read (the first poll, a
        scan, or again after a firmware update moved the models): what the unit can do
        (`SunSpecInverter.curtailable`) is known from then on."""
        self._on_found.append(listener)

    # -- polling -------------------------------------------------------------------------
    @property
    def sunspec_map(self) -> SunSpecMap | None:
        return self._map

    async def poll_once(self) -> list[Reading]:
        """Read and convert; raises a DeviceError (nothing published) on any failure."""
        smap = await self.ensure_map()
        locs = models_for_role(self.role, smap, self.cfg.hybrid)
        try:
            models = await read_models(self._endpoint, self.cfg.unit_id, locs)
        except ModelMoved:
            self._map = None  # firmware update or restart: walk the chain again next time
            raise
        except ModbusRejected as exc:
            if exc.exception_code == 2:  # the model is gone from where it was
                self._map = None
            raise
        # Decided on the whole map: a PV poll does not read the storage models.
        hybrid = is_hybrid(smap.ids, self.cfg.hybrid)
        if hybrid and self.role in (Role.PV, Role.BATTERY):
            notes = split_hybrid(models).notes
            if self.role is Role.PV:  # a PV poll does not read 802: its battery notes are moot
                notes = [n for n in notes if not n.startswith("battery")]
            self._note_once(notes)
        return readings_from_models(
            self.role, models, self.device_id, self._clock.now(), self.cfg.invert_power, hybrid
        )

    def _note_once(self, notes: list[str]) -> None:
        """Say once per device why a hybrid's figure is missing or derived (not every poll)."""
        for note in notes:
            if note not in self._noted:
                self._noted.add(note)
                log.warning("sunspec hybrid", device=self.device_id, role=str(self.role), note=note)

    async def ensure_map(self) -> SunSpecMap:
        if self._map is None:
            base = self.cfg.base_address
            bases = BASE_ADDRESSES if base is None else (base,)
            smap = await discover(self._endpoint, self.cfg.unit_id, bases)
            if not models_for_role(self.role, smap, self.cfg.hybrid):
                raise NotSunSpec(
                    self.device_id,
                    f"models {smap.ids} have nothing for role {self.role}",
                )
            self._map = smap
            log.info(
                "sunspec device found",
                device=self.device_id,
                endpoint=self._endpoint.key,
                unit=self.cfg.unit_id,
                base=smap.base,
                models=smap.ids,
                hybrid=is_hybrid(smap.ids, self.cfg.hybrid),
            )
            for listener in self._on_found:
                try:
                    listener(self)
                except Exception:  # a listener's bug must not fail the poll
                    log.exception("sunspec map listener failed", device=self.device_id)
        return self._map

    # -- shared helpers for capabilities ---------------------------------------------------
    async def _fresh_model(self, *model_ids: int) -> ModelData:
        smap = await self.ensure_map()
        loc = smap.find(*model_ids)
        if loc is None:
            ids = ", ".join(str(m) for m in model_ids)
            raise NotSupported(f"{self.device_id}: device has none of models {ids}")
        models = await read_models(self._endpoint, self.cfg.unit_id, [loc])
        return models[loc.model_id]

    async def _write_points(self, data: ModelData, points: list[tuple[str, float]]) -> None:
        """Write points in the given order, each verified by reading back."""
        for name, value in points:
            address, words = encode_point(data, name, value, self.device_id)
            await self._endpoint.write(self.cfg.unit_id, address, words)

    def _implemented(self, data: ModelData, name: str) -> bool:
        p = data.points.get(name)
        return p is not None and p.raw is not None and p.bad is None


class SunSpecMeter(SunSpecDevice):
    """Role grid or load: a SunSpec meter (20x/21x). Implements `Meter`."""

    async def power_w(self) -> float:
        return self._fresh(Quantity.POWER_W)

    async def energy_import_wh(self) -> float:
        return self._fresh(Quantity.ENERGY_IMPORT_WH)

    async def energy_export_wh(self) -> float:
        return self._fresh(Quantity.ENERGY_EXPORT_WH)


class SunSpecInverter(SunSpecDevice):
    """Role pv: an inverter (10x/11x/701), curtailed through 123 or 704 where the unit has
    one. Implements `PvInverter`; whether the limit can be set is `curtailable`, known once
    the model map is read (a unit without 123 and 704 is measured only)."""

    @property
    def curtailable(self) -> bool | None:
        """True if the unit's map has model 123 or 704, False if not, None until read."""
        if self._map is None:
            return None
        return self._map.find(*LIMIT_MODELS) is not None

    async def power_w(self) -> float:
        return self._fresh(Quantity.POWER_W)

    async def set_power_limit_pct(self, limit_pct: float) -> None:
        """Limit AC output to `limit_pct` % of WMax; 100 releases the limit."""
        if not isinstance(limit_pct, int | float) or not 0.0 <= limit_pct <= 100.0:
            raise BadValue(self.device_id, f"limit_pct {limit_pct!r}: must be 0..100")
        async with self._control_lock:
            data = await self._fresh_model(*LIMIT_MODELS)
            release = limit_pct >= 100.0
            revert = float(self.cfg.control_revert_s)
            if data.model_id == 123:
                writes = [("WMaxLimPct", float(limit_pct))]
                if self._implemented(data, "WMaxLimPct_RvrtTms"):
                    writes.append(("WMaxLimPct_RvrtTms", revert))
                writes.append(("WMaxLim_Ena", 0.0 if release else 1.0))
            else:
                writes = [("WMaxLimPct", float(limit_pct))]
                if self._implemented(data, "WMaxLimPctRvrtTms"):
                    writes.append(("WMaxLimPctRvrtTms", revert))
                writes.append(("WMaxLimPctEna", 0.0 if release else 1.0))
            await self._write_points(data, writes)
            # Debug: the control loop re-sends it all day (most of the log file at info).
            log.debug("sunspec pv limit set", device=self.device_id, limit_pct=limit_pct)


class SunSpecBattery(SunSpecDevice):
    """Role battery: SoC and power from 802/713/124 (+ the inverter model), control through
    124. Implements `Battery` and `BatteryControl`.

    Mode mapping on model 124 (StorCtl_Mod bit 0 = limit charging to InWRte, bit 1 = limit
    discharging to OutWRte; a negative rate reverses the direction, which is how a forced
    charge or discharge is expressed):
    normal → StorCtl_Mod 0 · idle → both limits at 0 % · hold-discharge → discharge limit 0 %
    · hold-charge → charge limit 0 % · force-charge P → charge from grid (ChaGriSet=GRID),
    InWRte = P/WChaMax, OutWRte = -InWRte · power-setpoint P → as force-charge for P >= 0,
    mirrored (OutWRte = |P|/WChaMax, InWRte = -OutWRte) for P < 0.
    The revert timeout `control_revert_s` is written with every setpoint, so the battery
    returns to normal by itself if hems stops sending.
    """

    @property
    def modes(self) -> frozenset[BatteryMode]:
        return self.cfg.modes

    async def soc_pct(self) -> float:
        return self._fresh(Quantity.SOC_PCT)

    async def power_w(self) -> float:
        return self._fresh(Quantity.POWER_W)

    async def set_mode(self, mode: BatteryMode, power_w: float = 0.0) -> None:
        if mode not in self.modes:
            raise NotSupported(f"{self.device_id}: battery mode {mode} is not offered")
        if not isinstance(power_w, int | float) or not math.isfinite(power_w):
            raise BadValue(self.device_id, f"power_w {power_w!r}: not a number")
        if mode is BatteryMode.FORCE_CHARGE and power_w < 0:
            raise BadValue(self.device_id, f"force-charge power_w {power_w}: must be >= 0")
        async with self._control_lock:
            data = await self._fresh_model(124)
            await self._write_points(data, self._plan_124(data, mode, float(power_w)))
            log.debug(  # re-sent all day: debug (a failed write is logged as a fault)
                "sunspec battery mode set", device=self.device_id, mode=str(mode), power_w=power_w
            )

    def _plan_124(
        self, data: ModelData, mode: BatteryMode, power_w: float
    ) -> list[tuple[str, float]]:
        """The ordered writes for a mode: rates and revert first, the enabling bits last."""
        rate: Callable[[float], float] = lambda w: self._rate_pct(data, w)  # noqa: E731
        if mode is BatteryMode.NORMAL:
            return [("StorCtl_Mod", 0.0)]
        if mode is BatteryMode.IDLE:
            out_in, ctl, grid = (0.0, 0.0), 3.0, None
        elif mode is BatteryMode.HOLD_DISCHARGE:
            out_in, ctl, grid = (0.0, 100.0), 2.0, None
        elif mode is BatteryMode.HOLD_CHARGE:
            out_in, ctl, grid = (100.0, 0.0), 1.0, None
        elif mode is BatteryMode.FORCE_CHARGE or power_w >= 0:
            pct = rate(abs(power_w))
            out_in, ctl, grid = (-pct, pct), 3.0, 1.0
        else:  # power setpoint, discharging
            pct = rate(abs(power_w))
            out_in, ctl, grid = (pct, -pct), 3.0, None
        writes = [("OutWRte", out_in[0]), ("InWRte", out_in[1])]
        if self._implemented(data, "InOutWRte_RvrtTms"):
            writes.append(("InOutWRte_RvrtTms", float(self.cfg.control_revert_s)))
        if grid is not None and self._implemented(data, "ChaGriSet"):
            writes.append(("ChaGriSet", grid))
        writes.append(("StorCtl_Mod", ctl))
        return writes

    def _rate_pct(self, data: ModelData, power_w: float) -> float:
        w_max = data.require(self.device_id, "WChaMax")
        if w_max <= 0:
            raise BadValue(self.device_id, f"model 124 WChaMax {w_max} W: must be > 0")
        pct = 100.0 * power_w / w_max
        if pct > 100.0:
            log.info(
                "sunspec battery setpoint capped",
                device=self.device_id,
                power_w=power_w,
                max_w=w_max,
            )
        return min(100.0, pct)


def sunspec_device(
    cfg: SunSpecDeviceConfig, pool: EndpointPool, state: SiteState, clock: Clock
) -> SunSpecDevice:
    """Build the adapter class for the entry's role."""
    if cfg.role is Role.PV:
        return SunSpecInverter(cfg, pool, state, clock)
    if cfg.role is Role.BATTERY:
        return SunSpecBattery(cfg, pool, state, clock)
    return SunSpecMeter(cfg, pool, state, clock)
