"""Serve the simulated home as SunSpec devices over real Modbus TCP (pymodbus server).

One TCP endpoint, three unit ids (like a hybrid inverter with a meter behind one gateway):

* unit 1 — PV inverter: models 1, 103, 123 (WMaxLimPct curtailment, Conn, revert timeout);
  with `pv_curtailment=False` models 1 and 103 only (a unit that cannot be curtailed)
* unit 2 — battery inverter: models 1, 103, 124 (storage control, revert timeout), 802
* unit 3 — grid meter: models 1, 203
* optionally (`UnitIds(hybrid=N)`) — the same PV and battery as one hybrid inverter: models 1,
  103 (AC output = PV - charge + discharge), 160 (2 PV MPPTs, battery charge/discharge
  modules), 124, and 802 or 713 (`HybridUnit`)

Each unit's map is "SunS" at `base_address` (40000), the models' `get_mb()` images from
pysunspec2, then the end marker 0xFFFF 0x0000. Register images are rebuilt from the physics on
every `refresh()` and copied into the pymodbus datastore by the SimDevice `action` hook on
each request, which also validates and applies writes to the RW control points.
See hil/README.md for the layout, units and sign conventions.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice
from sunspec2 import device as ss

from hems.core.clock import Clock
from hil.home import Home, HomeState
from hil.modbus_sim import SimTcpServer

__all__ = ["SUNSPEC_BASE", "HybridUnit", "SunSpecServer", "SunSpecUnit", "UnitIds"]

log = structlog.get_logger(__name__)

SUNSPEC_BASE = 40000
_SUNS = [0x5375, 0x6E53]  # "SunS"
_END = [0xFFFF, 0x0000]
_WRITE_FCS = frozenset({5, 6, 15, 16, 22, 23})

# Fixed scale factors (see README). Power SFs are chosen from the ratings at build time.
A_SF = -2
V_SF = -1
HZ_SF = -2
WH_SF = 0
PCT_SF = -1  # SoC and reserve percentages
RTE_SF = -2  # 124 InWRte/OutWRte and 123 WMaxLimPct: 0.01 %
TMP_SF = -1


def power_sf(max_abs_w: float) -> int:
    """Smallest scale factor >= 0 that fits `max_abs_w` in an int16."""
    sf = 0
    while max_abs_w / 10**sf > 32767:
        sf += 1
    return sf


def _scaled(value: float, sf: int) -> int:
    return round(value / 10**sf)


@dataclass(frozen=True)
class UnitIds:
    pv: int = 1
    battery: int = 2
    meter: int = 3
    hybrid: int | None = None  # also serve the home's PV + battery as one hybrid inverter


class _WriteRejected(Exception):
    def __init__(self, code: ExcCodes, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _signed16(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


class SunSpecUnit:
    """One unit id's SunSpec register map, held as a list of registers from `base`."""

    name = "unit"

    def __init__(self, unit_id: int, models: list[ss.Model], base: int = SUNSPEC_BASE) -> None:
        self.unit_id = unit_id
        self.base = base
        self.models: dict[int, ss.Model] = {}
        self.offsets: dict[int, int] = {}  # model id -> register offset of its ID register
        self._points: dict[int, tuple[int, str]] = {}  # register offset -> (model id, point)
        off = len(_SUNS)
        for m in models:
            self.models[m.model_id] = m
            self.offsets[m.model_id] = off
            for name, p in m.points.items():
                if p.len == 1:
                    self._points[off + p.offset] = (m.model_id, name)
                else:
                    for k in range(p.len):
                        self._points[off + p.offset + k] = (m.model_id, name)
            off += len(m.get_mb()) // 2
        self.image: list[int] = [*_SUNS, *([0] * (off - len(_SUNS))), *_END]
        for mid in self.models:
            self.rebuild(mid)

    def address_of(self, model_id: int, point: str | None = None) -> int:
        """Protocol address of a model's ID register, or of one of its points."""
        off = self.base + self.offsets[model_id]
        return off if point is None else off + self.models[model_id].points[point].offset

    def rebuild(self, model_id: int) -> None:
        raw = self.models[model_id].get_mb()
        regs = struct.unpack(f">{len(raw) // 2}H", raw)
        off = self.offsets[model_id]
        self.image[off : off + len(regs)] = regs

    def set_points(self, model_id: int, **values: int | str | None) -> None:
        m = self.models[model_id]
        for name, v in values.items():
            m.points[name].set_value(v)

    def value(self, model_id: int, point: str) -> Any:
        return self.models[model_id].points[point].value

    # -- writes -------------------------------------------------------------------------

    def decode_write(self, address: int, values: list[int]) -> dict[int, dict[str, int]]:
        """Map a register write to {model id: {point: python int}}; reject non-RW targets."""
        out: dict[int, dict[str, int]] = {}
        for i, raw in enumerate(values):
            off = address - self.base + i
            hit = self._points.get(off)
            if hit is None:
                raise _WriteRejected(ExcCodes.ILLEGAL_ADDRESS, f"register {address + i}: read-only")
            mid, name = hit
            p = self.models[mid].points[name]
            if p.pdef.get("access") != "RW" or p.len != 1:
                raise _WriteRejected(
                    ExcCodes.ILLEGAL_ADDRESS, f"register {address + i} ({name}): read-only"
                )
            ptype = p.pdef["type"]
            out.setdefault(mid, {})[name] = (
                _signed16(raw) if ptype in ("int16", "sunssf") else int(raw)
            )
        return out

    def apply_writes(self, writes: dict[int, dict[str, int]], now: datetime) -> None:
        """Validate then apply. Subclasses check ranges and drive the physics."""
        for mid, pts in writes.items():
            self.set_points(mid, **pts)
            self.rebuild(mid)

    def refresh(self, state: HomeState, now: datetime) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_reverts(self, now: datetime) -> None:
        """Revert timed-out controls; default: nothing to revert."""


def _common(mn: str, md: str, sn: str) -> ss.Model:
    m = ss.Model(model_id=1)
    m.points["Mn"].set_value(mn)
    m.points["Md"].set_value(md)
    m.points["Opt"].set_value("hil")
    m.points["Vr"].set_value("1.0.0")
    m.points["SN"].set_value(sn)
    m.points["DA"].set_value(1)
    return m


def _inverter_103(state: HomeState, m: ss.Model, ac_w: float, w_sf: int, wh: float) -> None:
    """Fill model 103 measurements for an inverter producing `ac_w` (+ = into the grid)."""
    p = m.points
    phases = len(state.voltage_phase_v)
    per_a = [abs(ac_w) / phases / v for v in state.voltage_phase_v]
    p["A"].set_value(_scaled(sum(per_a), A_SF))
    for i, name in enumerate(("AphA", "AphB", "AphC")):
        p[name].set_value(_scaled(per_a[i], A_SF) if i < phases else None)
    for i, name in enumerate(("PhVphA", "PhVphB", "PhVphC")):
        p[name].set_value(_scaled(state.voltage_phase_v[i], V_SF) if i < phases else None)
    p["W"].set_value(max(-32767, min(32767, _scaled(ac_w, w_sf))))
    p["VA"].set_value(max(-32767, min(32767, _scaled(abs(ac_w), w_sf))))
    p["VAr"].set_value(0)
    p["PF"].set_value(100)
    p["Hz"].set_value(_scaled(state.frequency_hz, HZ_SF))
    p["WH"].set_value(int(wh // 10**WH_SF) % 2**32)
    p["TmpCab"].set_value(_scaled(30.0 + abs(ac_w) / 500.0, TMP_SF))


def _static_sfs(m: ss.Model, w_sf: int) -> None:
    for name, v in (
        ("A_SF", A_SF),
        ("V_SF", V_SF),
        ("W_SF", w_sf),
        ("Hz_SF", HZ_SF),
        ("VA_SF", w_sf),
        ("VAr_SF", w_sf),
        ("PF_SF", 0),
        ("WH_SF", WH_SF),
        ("Tmp_SF", TMP_SF),
    ):
        m.points[name].set_value(v)


class PvInverterUnit(SunSpecUnit):
    """Models 1, 103, 123. 123 WMaxLimPct (of WMax = pv_inverter_max_w) with WMaxLim_Ena
    curtails the PV; Conn = 0 disconnects it; WMaxLimPct_RvrtTms > 0 reverts the limit.
    `curtailment=False`: models 1 and 103 only, so nothing can limit it (every write to the
    unit is refused: 103 has no writable point)."""

    name = "pv"

    def __init__(
        self,
        unit_id: int,
        home: Home,
        serial: str,
        base: int = SUNSPEC_BASE,
        curtailment: bool = True,
    ) -> None:
        self.home = home
        self.w_sf = power_sf(home.config.pv_inverter_max_w * 1.1)
        m103 = ss.Model(model_id=103)
        _static_sfs(m103, self.w_sf)
        m123 = ss.Model(model_id=123)
        m123.points["Conn"].set_value(1)
        m123.points["WMaxLimPct"].set_value(_scaled(100.0, RTE_SF))
        m123.points["WMaxLim_Ena"].set_value(0)
        m123.points["WMaxLimPct_RvrtTms"].set_value(0)
        m123.points["WMaxLimPct_SF"].set_value(RTE_SF)
        m123.points["OutPFSet_SF"].set_value(-3)
        m123.points["VArPct_SF"].set_value(0)
        models = [_common("hems-hil", "HIL-PV", serial), m103]
        super().__init__(unit_id, [*models, m123] if curtailment else models, base)
        self._revert_at: datetime | None = None

    def refresh(self, state: HomeState, now: datetime) -> None:
        m = self.models[103]
        _inverter_103(state, m, state.pv_w, self.w_sf, state.pv_energy_wh)
        m.points["DCW"].set_value(None)
        if state.pv_available_w <= 0:
            st = 2  # SLEEPING
        elif state.pv_w < min(state.pv_available_w, self.home.config.pv_inverter_max_w) - 1:
            st = 5  # THROTTLED
        else:
            st = 4  # MPPT
        m.points["St"].set_value(st)
        self.rebuild(103)

    def apply_writes(self, writes: dict[int, dict[str, int]], now: datetime) -> None:
        w = writes.get(123, {})
        if "WMaxLimPct" in w and not 0 <= w["WMaxLimPct"] * 10**RTE_SF <= 100:
            raise _WriteRejected(
                ExcCodes.ILLEGAL_VALUE,
                f"WMaxLimPct={w['WMaxLimPct']}: must be 0..100 % (SF {RTE_SF})",
            )
        for name in ("WMaxLim_Ena", "Conn"):
            if name in w and w[name] not in (0, 1):
                raise _WriteRejected(ExcCodes.ILLEGAL_VALUE, f"{name}={w[name]}: must be 0 or 1")
        super().apply_writes(writes, now)
        if {"WMaxLimPct", "WMaxLim_Ena", "WMaxLimPct_RvrtTms"} & w.keys():
            rvrt_s = self.value(123, "WMaxLimPct_RvrtTms") or 0
            ena = self.value(123, "WMaxLim_Ena") == 1
            self._revert_at = now + timedelta(seconds=rvrt_s) if rvrt_s and ena else None
        self._apply()

    def check_reverts(self, now: datetime) -> None:
        if self._revert_at is not None and now >= self._revert_at and 123 in self.models:
            self._revert_at = None
            self.set_points(123, WMaxLim_Ena=0)
            self.rebuild(123)
            self._apply()
            log.info("hil pv limit reverted", unit=self.unit_id)

    def _apply(self) -> None:
        if self.value(123, "Conn") == 0:
            self.home.set_pv_limit_pct(0.0)
        elif self.value(123, "WMaxLim_Ena") == 1:
            self.home.set_pv_limit_pct(self.value(123, "WMaxLimPct") * 10**RTE_SF)
        else:
            self.home.set_pv_limit_pct(None)


class BatteryUnit(SunSpecUnit):
    """Models 1, 103 (W + = discharging), 124 (storage control), 802 (battery).

    124 control window, in AC watts with + = charging, percentages of WChaMax:
      upper = InWRte % if StorCtl_Mod bit 0 (CHARGE) else max charge,
      lower = -OutWRte % if bit 1 (DISCHARGE) else -max discharge.
    Negative OutWRte forces charging, negative InWRte forces discharging; InWRte = OutWRte = 0
    with both bits holds the battery idle. StorCtl_Mod = 0 is normal self-consumption.
    InOutWRte_RvrtTms > 0: that many seconds after the last control write the unit reverts to
    StorCtl_Mod = 0 (normal). MinRsvPct sets the self-consumption reserve; ChaGriSet = 0 (PV)
    forbids charging from the grid.
    """

    name = "battery"

    def __init__(self, unit_id: int, home: Home, serial: str, base: int = SUNSPEC_BASE) -> None:
        self.home = home
        cfg = home.config
        self.w_sf = power_sf(max(cfg.battery_max_charge_w, cfg.battery_max_discharge_w) * 1.1)
        self.wh_sf = power_sf(cfg.battery_capacity_wh)
        self.nominal_v = 400.0  # DC bus of a typical HV home battery
        m103 = ss.Model(model_id=103)
        _static_sfs(m103, self.w_sf)
        m124, m802 = self._storage_models()
        super().__init__(unit_id, [_common("hems-hil", "HIL-BAT", serial), m103, m124, m802], base)
        self._revert_at: datetime | None = None

    def _storage_models(self) -> tuple[ss.Model, ss.Model]:
        """Models 124 and 802 with their ratings; needs `home`, `w_sf`, `wh_sf`, `nominal_v`."""
        cfg = self.home.config
        m124 = ss.Model(model_id=124)
        for name, v in (
            ("WChaMax", _scaled(cfg.battery_max_charge_w, self.w_sf)),
            ("StorCtl_Mod", 0),
            ("MinRsvPct", _scaled(cfg.battery_reserve_pct, PCT_SF)),
            ("OutWRte", _scaled(100.0, RTE_SF)),
            ("InWRte", _scaled(100.0, RTE_SF)),
            ("InOutWRte_WinTms", 0),
            ("InOutWRte_RvrtTms", 0),
            ("InOutWRte_RmpTms", 0),
            ("ChaGriSet", 1),
            ("WChaMax_SF", self.w_sf),
            ("MinRsvPct_SF", PCT_SF),
            ("ChaState_SF", PCT_SF),
            ("StorAval_SF", self.wh_sf),
            ("InBatV_SF", V_SF),
            ("InOutWRte_SF", RTE_SF),
        ):
            m124.points[name].set_value(v)
        m802 = ss.Model(model_id=802)
        for name, v in (
            ("AHRtg", round(cfg.battery_capacity_wh / self.nominal_v)),
            ("WHRtg", _scaled(cfg.battery_capacity_wh, self.wh_sf)),
            ("WChaRteMax", _scaled(cfg.battery_max_charge_w, self.w_sf)),
            ("WDisChaRteMax", _scaled(cfg.battery_max_discharge_w, self.w_sf)),
            ("SoCMax", _scaled(cfg.battery_soc_max_pct, PCT_SF)),
            ("SoCMin", _scaled(cfg.battery_soc_min_pct, PCT_SF)),
            ("LocRemCtl", 0),
            ("Typ", 4),  # LITHIUM_ION
            ("State", 3),  # CONNECTED
            ("AHRtg_SF", 0),
            ("WHRtg_SF", self.wh_sf),
            ("WChaDisChaMax_SF", self.w_sf),
            ("SoC_SF", PCT_SF),
            ("V_SF", V_SF),
            ("A_SF", A_SF),
            ("W_SF", self.w_sf),
        ):
            m802.points[name].set_value(v)
        return m124, m802

    def refresh(self, state: HomeState, now: datetime) -> None:
        discharge_w = -state.battery_w  # SunSpec inverter convention: + = delivering AC
        _inverter_103(state, self.models[103], discharge_w, self.w_sf, state.battery_discharge_wh)
        self.set_points(103, St=4 if abs(state.battery_w) > 1 else 8)  # MPPT / STANDBY
        self.rebuild(103)
        self._refresh_storage(state)

    def _refresh_storage(self, state: HomeState) -> None:
        """124 and 802 (and 713 where served) from the battery's state."""
        cfg = self.home.config
        discharge_w = -state.battery_w  # SunSpec convention: + = discharging
        if state.battery_w > 1:
            cha_st = 5 if state.soc_pct >= cfg.battery_soc_max_pct - 0.05 else 4  # FULL/CHARGING
        elif state.battery_w < -1:
            cha_st = 3  # DISCHARGING
        elif state.soc_pct >= cfg.battery_soc_max_pct - 0.05:
            cha_st = 5  # FULL
        elif state.soc_pct <= cfg.battery_soc_min_pct + 0.05:
            cha_st = 2  # EMPTY
        else:
            cha_st = 6  # HOLDING
        stored_wh = cfg.battery_capacity_wh * state.soc_pct / 100.0
        self.set_points(
            124,
            ChaState=_scaled(state.soc_pct, PCT_SF),
            StorAval=_scaled(stored_wh, self.wh_sf),
            InBatV=_scaled(self.nominal_v, V_SF),
            ChaSt=cha_st,
        )
        self.rebuild(124)
        if 802 in self.models:
            self.set_points(
                802,
                SoC=_scaled(state.soc_pct, PCT_SF),
                ChaSt=cha_st,
                V=_scaled(self.nominal_v, V_SF),
                A=_scaled(discharge_w / self.nominal_v, A_SF),
                W=max(-32767, min(32767, _scaled(discharge_w, self.w_sf))),
            )
            self.rebuild(802)
        if 713 in self.models:
            self.set_points(
                713, WHAvail=_scaled(stored_wh, self.wh_sf), SoC=_scaled(state.soc_pct, PCT_SF)
            )
            self.rebuild(713)

    def apply_writes(self, writes: dict[int, dict[str, int]], now: datetime) -> None:
        cfg = self.home.config
        w = writes.get(124, {})
        for name in ("InWRte", "OutWRte"):
            if name in w and not -100 <= w[name] * 10**RTE_SF <= 100:
                raise _WriteRejected(
                    ExcCodes.ILLEGAL_VALUE,
                    f"{name}={w[name]}: must be -100..100 % (SF {RTE_SF})",
                )
        if "StorCtl_Mod" in w and w["StorCtl_Mod"] & ~0x3:
            raise _WriteRejected(
                ExcCodes.ILLEGAL_VALUE, f"StorCtl_Mod={w['StorCtl_Mod']}: only bits 0, 1"
            )
        if "WChaMax" in w and not 0 < w["WChaMax"] * 10**self.w_sf <= cfg.battery_max_charge_w:
            raise _WriteRejected(
                ExcCodes.ILLEGAL_VALUE,
                f"WChaMax={w['WChaMax']}: must be 1..{cfg.battery_max_charge_w:g} W",
            )
        if "MinRsvPct" in w and not 0 <= w["MinRsvPct"] * 10**PCT_SF <= 100:
            raise _WriteRejected(ExcCodes.ILLEGAL_VALUE, f"MinRsvPct={w['MinRsvPct']}: 0..100 %")
        if "ChaGriSet" in w and w["ChaGriSet"] not in (0, 1):
            raise _WriteRejected(ExcCodes.ILLEGAL_VALUE, f"ChaGriSet={w['ChaGriSet']}: 0 or 1")
        super().apply_writes(writes, now)
        if {"StorCtl_Mod", "InWRte", "OutWRte", "InOutWRte_RvrtTms", "WChaMax"} & w.keys():
            rvrt_s = self.value(124, "InOutWRte_RvrtTms") or 0
            active = self.value(124, "StorCtl_Mod") != 0
            self._revert_at = now + timedelta(seconds=rvrt_s) if rvrt_s and active else None
        self._apply()

    def check_reverts(self, now: datetime) -> None:
        if self._revert_at is not None and now >= self._revert_at:
            self._revert_at = None
            self.set_points(
                124,
                StorCtl_Mod=0,
                InWRte=_scaled(100.0, RTE_SF),
                OutWRte=_scaled(100.0, RTE_SF),
            )
            self.rebuild(124)
            self._apply()
            log.info("hil battery control reverted", unit=self.unit_id)

    def control_window_w(self) -> tuple[float, float] | None:
        """The (min, max) AC power window (+ = charge) the 124 registers ask for."""
        cfg = self.home.config
        mode = self.value(124, "StorCtl_Mod") or 0
        if mode == 0:
            return None
        ref_w = self.value(124, "WChaMax") * 10**self.w_sf
        hi = cfg.battery_max_charge_w
        lo = -cfg.battery_max_discharge_w
        if mode & 0x1:
            hi = self.value(124, "InWRte") * 10**RTE_SF / 100.0 * ref_w
        if mode & 0x2:
            lo = -self.value(124, "OutWRte") * 10**RTE_SF / 100.0 * ref_w
        # A forced charge (lower bound > 0) wins over a smaller upper bound: the client may be
        # half-way through writing a consistent pair.
        return lo, max(lo, hi)

    def _apply(self) -> None:
        window = self.control_window_w()
        if window is None:
            self.home.clear_battery_control()
        else:
            self.home.set_battery_window(*window)
        self.home.set_battery_reserve_pct(self.value(124, "MinRsvPct") * 10**PCT_SF)
        self.home.set_grid_charging_allowed(self.value(124, "ChaGriSet") != 0)


class HybridUnit(BatteryUnit):
    """A hybrid inverter: the home's PV and battery behind one AC output.

    Models 1, 103 (W = AC output = PV - battery charge + battery discharge, + = delivering),
    160 (MPPT: module 1 "MPPT 1" and 2 "MPPT 2" carry 60 % / 40 % of the PV, module 3
    "StCha 3" the battery charge and 4 "StDisCha 4" the discharge, as Fronius labels them),
    124 (storage control, as `BatteryUnit`), and 802 (battery, W + = discharging) or, with
    `storage_model=713`, 713 (DER storage capacity: WHRtg, WHAvail, SoC) instead.
    DC figures equal the home's AC flows (conversion losses are not modelled), so
    103 W = sum of the PV modules' DCW - StCha DCW + StDisCha DCW exactly.
    Serving it beside units 1 and 2 shows the same home twice: configure one or the other.
    """

    name = "hybrid"
    MODULES = ("MPPT 1", "MPPT 2", "StCha 3", "StDisCha 4")
    PV_SHARES = (0.6, 0.4)

    def __init__(
        self,
        unit_id: int,
        home: Home,
        serial: str,
        base: int = SUNSPEC_BASE,
        storage_model: int = 802,
    ) -> None:
        if storage_model not in (802, 713):
            raise ValueError(f"storage_model: 802 or 713, got {storage_model}")
        self.home = home
        cfg = home.config
        peak_w = max(
            cfg.pv_inverter_max_w + cfg.battery_max_discharge_w,
            cfg.battery_max_charge_w,
        )
        self.w_sf = power_sf(peak_w * 1.1)
        self.wh_sf = power_sf(cfg.battery_capacity_wh)
        self.dcwh_sf = 0
        self.nominal_v = 400.0
        m103 = ss.Model(model_id=103)
        _static_sfs(m103, self.w_sf)
        m160 = ss.Model(
            model_id=160,
            data={
                "N": len(self.MODULES),
                "module": [{"ID": i + 1, "IDStr": n} for i, n in enumerate(self.MODULES)],
            },
        )
        for name, v in (("DCA_SF", A_SF), ("DCV_SF", V_SF), ("DCW_SF", self.w_sf)):
            m160.points[name].set_value(v)
        m160.points["DCWH_SF"].set_value(self.dcwh_sf)
        m124, m802 = self._storage_models()
        storage = m802
        if storage_model == 713:
            storage = ss.Model(model_id=713)
            storage.points["WHRtg"].set_value(_scaled(cfg.battery_capacity_wh, self.wh_sf))
            storage.points["SoH"].set_value(_scaled(100.0, PCT_SF))
            storage.points["WH_SF"].set_value(self.wh_sf)
            storage.points["Pct_SF"].set_value(PCT_SF)
        common = _common("hems-hil", "HIL-HYBRID", serial)
        SunSpecUnit.__init__(self, unit_id, [common, m103, m160, m124, storage], base)
        self._revert_at = None

    def refresh(self, state: HomeState, now: datetime) -> None:
        ac_w = state.pv_w - state.battery_w
        # Lifetime AC energy out: PV plus discharge (charging from PV never left the unit).
        out_wh = state.pv_energy_wh + state.battery_discharge_wh
        _inverter_103(state, self.models[103], ac_w, self.w_sf, out_wh)
        self.set_points(103, St=4 if abs(ac_w) > 1 or state.pv_w > 1 else 8)
        self.rebuild(103)
        flows = (
            *(state.pv_w * share for share in self.PV_SHARES),
            max(0.0, state.battery_w),
            max(0.0, -state.battery_w),
        )
        energies = (
            *(state.pv_energy_wh * share for share in self.PV_SHARES),
            state.battery_charge_wh,
            state.battery_discharge_wh,
        )
        m160 = self.models[160]
        for module, power_w, energy_wh in zip(m160.groups["module"], flows, energies, strict=True):
            module.points["DCW"].set_value(min(0xFFFE, _scaled(power_w, self.w_sf)))
            module.points["DCV"].set_value(_scaled(self.nominal_v, V_SF))
            module.points["DCA"].set_value(_scaled(power_w / self.nominal_v, A_SF))
            module.points["DCWH"].set_value(int(energy_wh // 10**self.dcwh_sf) % 2**32)
            module.points["DCSt"].set_value(4 if power_w > 1 else 8)
        self.rebuild(160)
        self._refresh_storage(state)


class MeterUnit(SunSpecUnit):
    """Models 1, 203. W, WphA..C: + = import (power flowing from the grid into the home)."""

    name = "meter"

    def __init__(self, unit_id: int, home: Home, serial: str, base: int = SUNSPEC_BASE) -> None:
        self.home = home
        cfg = home.config
        self.w_sf = power_sf(cfg.fuse_a * cfg.nominal_voltage_v * cfg.phases * 1.5)
        m = ss.Model(model_id=203)
        for name, v in (
            ("A_SF", A_SF),
            ("V_SF", V_SF),
            ("Hz_SF", HZ_SF),
            ("W_SF", self.w_sf),
            ("VA_SF", self.w_sf),
            ("VAR_SF", self.w_sf),
            ("PF_SF", 0),
            ("TotWh_SF", WH_SF),
        ):
            m.points[name].set_value(v)
        super().__init__(unit_id, [_common("hems-hil", "HIL-METER", serial), m], base)

    def refresh(self, state: HomeState, now: datetime) -> None:
        p = self.models[203].points
        n = len(state.grid_phase_w)
        phase_names = ("A", "B", "C")

        def w(x: float) -> int:
            return max(-32767, min(32767, _scaled(x, self.w_sf)))

        # Signed current: + when importing on that phase.
        amps = [
            math.copysign(a, g)
            for a, g in zip(state.current_phase_a, state.grid_phase_w, strict=True)
        ]
        p["A"].set_value(max(-32767, min(32767, _scaled(sum(amps), A_SF))))
        p["PhV"].set_value(_scaled(sum(state.voltage_phase_v) / n, V_SF))
        p["Hz"].set_value(_scaled(state.frequency_hz, HZ_SF))
        p["W"].set_value(w(state.grid_w))
        p["VA"].set_value(w(abs(state.grid_w)))
        p["VAR"].set_value(0)
        p["PF"].set_value(100)
        p["TotWhImp"].set_value(int(state.import_wh // 10**WH_SF) % 2**32)
        p["TotWhExp"].set_value(int(state.export_wh // 10**WH_SF) % 2**32)
        for i, ph in enumerate(phase_names):
            on = i < n
            p[f"Aph{ph}"].set_value(max(-32767, min(32767, _scaled(amps[i], A_SF))) if on else None)
            p[f"PhVph{ph}"].set_value(_scaled(state.voltage_phase_v[i], V_SF) if on else None)
            p[f"Wph{ph}"].set_value(w(state.grid_phase_w[i]) if on else None)
            p[f"VAph{ph}"].set_value(w(abs(state.grid_phase_w[i])) if on else None)
            p[f"TotWhImpPh{ph}"].set_value(
                int(state.import_phase_wh[i] // 10**WH_SF) % 2**32 if on else None
            )
            p[f"TotWhExpPh{ph}"].set_value(
                int(state.export_phase_wh[i] // 10**WH_SF) % 2**32 if on else None
            )
        p["Evt"].set_value((1 << 5) if state.over_current else 0)  # M_EVENT_Over_Current
        self.rebuild(203)


async def _no_such_unit(*_args: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


class SunSpecServer(SimTcpServer):
    """The home's PV inverter, battery inverter and grid meter on one Modbus TCP endpoint.

    `await start()` binds (port 0 picks a free port; read `.port`), `refresh()` after every
    physics step, `await stop()`. Also an async context manager.
    """

    def __init__(
        self,
        home: Home,
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_ids: UnitIds | None = None,
        base_address: int = SUNSPEC_BASE,
        serial_prefix: str = "HIL",
        hybrid_storage_model: int = 802,
        pv_curtailment: bool = True,
    ) -> None:
        """`pv_curtailment=False`: the PV unit has no model 123 (measured only)."""
        super().__init__(host, port)
        ids = unit_ids or UnitIds()
        self.home = home
        self.clock = clock
        self.units: dict[int, SunSpecUnit] = {
            ids.pv: PvInverterUnit(
                ids.pv, home, f"{serial_prefix}-PV-0001", base_address, pv_curtailment
            ),
            ids.battery: BatteryUnit(ids.battery, home, f"{serial_prefix}-BAT-0001", base_address),
            ids.meter: MeterUnit(ids.meter, home, f"{serial_prefix}-MTR-0001", base_address),
        }
        if ids.hybrid is not None:
            self.units[ids.hybrid] = HybridUnit(
                ids.hybrid, home, f"{serial_prefix}-HYB-0001", base_address, hybrid_storage_model
            )
        self.unit_ids = ids
        self.requests = 0
        # What a client last saw, for telling a control fault from a client behind the
        # physics (the soak's export check): per unit, the physics time of the registers its
        # last read got; per written unit, (the physics time when the write came, the time of
        # the meter registers the client had read last before it).
        self.read_state_at: dict[int, datetime] = {}
        self.write_basis: dict[int, tuple[datetime, datetime | None]] = {}
        self.refresh()

    @property
    def pv(self) -> PvInverterUnit:
        return self.units[self.unit_ids.pv]  # type: ignore[return-value]

    @property
    def battery(self) -> BatteryUnit:
        return self.units[self.unit_ids.battery]  # type: ignore[return-value]

    @property
    def meter(self) -> MeterUnit:
        return self.units[self.unit_ids.meter]  # type: ignore[return-value]

    @property
    def hybrid(self) -> HybridUnit:
        if self.unit_ids.hybrid is None:
            raise RuntimeError("hil sunspec: no hybrid unit (UnitIds(hybrid=N))")
        return self.units[self.unit_ids.hybrid]  # type: ignore[return-value]

    def check_reverts(self, now: datetime | None = None) -> None:
        """Revert controls whose timeout has passed (call before stepping the physics)."""
        now = now or self.clock.now()
        for unit in self.units.values():
            unit.check_reverts(now)

    def refresh(self, now: datetime | None = None) -> None:
        """Rebuild every unit's registers from the home's latest state; run revert timers."""
        now = now or self.clock.now()
        self.check_reverts(now)
        for unit in self.units.values():
            unit.refresh(self.home.state, now)

    def _devices(self) -> list[SimDevice]:
        devices = [
            SimDevice(
                id=uid,
                simdata=[SimData(unit.base, values=list(unit.image), datatype=DataType.REGISTERS)],
                action=functools.partial(self._action, unit),
            )
            for uid, unit in self.units.items()
        ]
        # Catch-all for unknown unit ids: answer like a gateway whose target is silent (0x0B)
        # instead of pymodbus's KeyError traceback.
        devices.append(
            SimDevice(
                id=0,
                simdata=[SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)],
                action=_no_such_unit,
            )
        )
        return devices

    async def start(self) -> None:
        await super().start()
        log.info("hil sunspec server listening", host=self.host, port=self.port)

    async def _action(
        self,
        unit: SunSpecUnit,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus SimDevice hook: sync registers from the image; validate and apply writes."""
        self.requests += 1
        now = self.clock.now()
        unit.check_reverts(now)
        state_at = self.home.state.at
        if set_values is None or func_code not in _WRITE_FCS:
            self.read_state_at[unit.unit_id] = state_at
        else:
            meter_read_at = self.read_state_at.get(self.unit_ids.meter)
            self.write_basis[unit.unit_id] = (state_at, meter_read_at)
            values = [int(v) for v in set_values]
            try:
                writes = unit.decode_write(address, values)
                unit.apply_writes(writes, now)
            except _WriteRejected as exc:
                log.warning(
                    "hil write rejected", unit=unit.unit_id, address=address, reason=exc.reason
                )
                return exc.code
        current_registers[: len(unit.image)] = unit.image
        return None
