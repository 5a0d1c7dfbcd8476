"""Hybrid inverters: PV and battery behind one SunSpec AC output, split, never confused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from modbus_sim import common_model, model_regs, sunspec_image
from pydantic import ValidationError
from structlog.testing import capture_logs

from hems.core.capabilities import BatteryMode
from hems.core.clock import ManualClock
from hems.core.readings import Quantity, Role
from hems.core.state import SiteState
from hems.devices.modbus.engine import EndpointPool
from hems.devices.modbus.scan import format_text, scan_endpoint, suggest_roles
from hems.devices.modbus.sunspec import decode_model
from hems.devices.modbus.sunspec_device import readings_from_models, sunspec_device
from hems.devices.modbus.sunspec_hybrid import module_kind, split_hybrid
from hems.errors import BadValue
from tests.testlib import sunspec_cfg

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BASE = 40000

FRONIUS_MODULES = ["MPPT 1", "MPPT 2", "StCha 3", "StDisCha 4"]


def m103(ac_w: int) -> list[int]:
    return model_regs(103, W=ac_w, W_SF=0, WH=9000, WH_SF=0, Hz=5000, Hz_SF=-2, A=150, A_SF=-1)


def m160(*dcw: int, names: list[str] | None = None) -> list[int]:
    names = names or FRONIUS_MODULES
    modules = [
        {"ID": i + 1, "IDStr": names[i], "DCW": w, "DCWH": 1000 * (i + 1)}
        for i, w in enumerate(dcw)
    ]
    return model_regs(160, N=len(dcw), DCW_SF=0, DCWH_SF=0, module=modules)


def m124() -> list[int]:
    return model_regs(
        124,
        WChaMax=5000,
        WChaMax_SF=0,
        StorCtl_Mod=0,
        ChaState=605,
        ChaState_SF=-1,
        OutWRte=10000,
        InWRte=10000,
        InOutWRte_SF=-2,
        InOutWRte_RvrtTms=0,
        ChaGriSet=0,
    )


def decoded(*blocks: list[int]) -> dict:
    out = {}
    at = BASE + 2
    for regs in blocks:
        out[regs[0]] = decode_model(regs[0], at, regs)
        at += len(regs)
    return out


def values(readings) -> dict[Quantity, float]:
    return {r.quantity: r.value for r in readings}


def test_module_kind_from_idstr():
    assert module_kind("MPPT 1") == "pv"
    assert module_kind("StCha 3") == "charge"
    assert module_kind("STDISCHA") == "discharge"
    assert module_kind("Battery") == "storage"
    assert module_kind("") is None and module_kind(None) is None


def test_hybrid_config_only_for_pv_and_battery():
    ok = sunspec_cfg(502, "bat", "battery", 1, timeout_s=1, backoff_max_s=1, hybrid=False)
    assert ok.hybrid is False
    with pytest.raises(ValidationError, match="hybrid: only for role pv or battery, not grid"):
        sunspec_cfg(502, "grid", "grid", 1, timeout_s=1, backoff_max_s=1, hybrid=True)


def test_hybrid_pv_from_160_battery_from_802_never_the_ac_output():
    # PV 2100 + 1400 = 3500 W; battery charging 1200 W (802 W = -1200); AC out 2300 W.
    models = decoded(
        m103(2300),
        m160(2100, 1400, 1200, 0),
        m124(),
        model_regs(802, SoC=61, SoC_SF=0, W=-1200, W_SF=0),
    )
    split = split_hybrid(models)
    assert (split.ac_w, split.pv_w, split.battery_w) == (2300, 3500, 1200)
    assert split.battery_source == "802.W"
    assert split.pv_energy_wh == 3000  # DCWH of the two PV modules only
    lines = [t.line() for t in split.terms]
    assert "103.W = 2300 W → inverter AC output" in lines
    assert "160.module[1].DCW = 2100 W → PV (MPPT 1)" in lines
    assert "160.module[3].DCW = 1200 W → battery charge, DC (StCha 3)" in lines
    pv = values(readings_from_models(Role.PV, models, "pv", T0))
    bat = values(readings_from_models(Role.BATTERY, models, "bat", T0))
    assert pv[Quantity.POWER_W] == 3500 and pv[Quantity.ENERGY_EXPORT_WH] == 3000
    assert Quantity.CURRENT_A not in pv  # the AC current is not the PV's
    assert bat[Quantity.POWER_W] == 1200 and bat[Quantity.SOC_PCT] == 61


def test_hybrid_battery_from_160_storage_modules_without_802():
    # Discharging 800 W at night: no PV, AC out 800 W.
    models = decoded(m103(800), m160(0, 0, 0, 800), m124())
    split = split_hybrid(models)
    assert split.pv_w == 0 and split.battery_w == -800
    assert split.battery_source.startswith("160 storage modules")
    bat = values(readings_from_models(Role.BATTERY, models, "bat", T0))
    assert bat[Quantity.POWER_W] == -800 and bat[Quantity.SOC_PCT] == 60.5


def test_hybrid_battery_derived_from_pv_minus_ac_says_so():
    models = decoded(m103(1000), m160(3000, names=["PV1"]), m124())
    split = split_hybrid(models)
    assert split.pv_w == 3000 and split.battery_w == 2000  # charging with the rest
    assert split.battery_source == "PV - AC output (derived)"
    assert any("derived" in n for n in split.notes)


def test_hybrid_without_160_no_pv_figure_and_ac_is_not_battery_power():
    models = decoded(m103(4321), m124())
    with pytest.raises(BadValue, match=r"without model 160.*no PV figure"):
        readings_from_models(Role.PV, models, "pv", T0)
    bat = values(readings_from_models(Role.BATTERY, models, "bat", T0))
    assert bat == {Quantity.SOC_PCT: 60.5}  # no power: 4321 W may be PV, not discharge
    # Stated AC-coupled battery inverter: its AC output is the battery's.
    ac = values(readings_from_models(Role.BATTERY, models, "bat", T0, hybrid=False))
    assert ac[Quantity.POWER_W] == -4321


def test_hybrid_unlabelled_or_missing_pv_module_gives_no_pv_figure():
    unlabelled = decoded(m103(2000), m160(1000, 1000, names=["MPPT 1", ""]), m124())
    with pytest.raises(BadValue, match="module 2 has no IDStr"):
        readings_from_models(Role.PV, unlabelled, "pv", T0)
    not_impl = decoded(m103(2000), m160(1000, 0xFFFF, names=["MPPT 1", "MPPT 2"]), m124())
    with pytest.raises(BadValue, match=r"module 2 \(MPPT 2\) DCW not available"):
        readings_from_models(Role.PV, not_impl, "pv", T0)


def test_plain_pv_inverter_keeps_its_ac_output():
    models = decoded(m103(2750), m160(2800, names=["PV1"]))
    assert values(readings_from_models(Role.PV, models, "pv", T0))[Quantity.POWER_W] == 2750


def test_scan_roles_for_hybrids():
    assert suggest_roles([1, 103, 160, 124, 203]) == [Role.GRID, Role.PV, Role.BATTERY]
    assert suggest_roles([1, 103, 124, 203]) == [Role.GRID, Role.BATTERY]
    assert suggest_roles([1, 103, 160]) == [Role.PV]


async def test_scan_hybrid_prints_raw_points_and_split(serve):
    image = sunspec_image(
        common_model("Acme", "Hy 8", "HY-1"),
        m103(4321),
        m160(2100, 1400, 0, 821),
        m124(),
        model_regs(802, SoC=55, SoC_SF=0, W=821, W_SF=0, WChaRteMax=5000, WChaDisChaMax_SF=0),
        model_regs(203, W=-300, W_SF=0),
    )
    srv = await serve({1: (BASE, image)})
    (report,) = await scan_endpoint("127.0.0.1", srv.port, [1])
    text = format_text([report], "127.0.0.1", srv.port)
    assert report.hybrid and report.roles == ["grid", "pv", "battery"]
    assert "hybrid: PV and battery behind one inverter" in text
    assert "103.W = 4321 W → inverter AC output" in text
    assert "160.module[1].DCW = 2100 W → PV (MPPT 1)" in text
    assert "802.W = 821 W → battery power, DC (+ = discharging)" in text
    assert "802.SoC = 55 % → battery state of charge" in text
    assert "203.W = -300 W → grid power (+ = import)" in text
    assert report.snapshot["pv"]["power_w"] == 3500
    assert report.snapshot["battery"]["power_w"] == -821  # discharging, not -4321
    assert report.snapshot["grid"]["power_w"] == -300


async def test_scan_hybrid_without_160_says_why_there_is_no_pv(serve):
    image = sunspec_image(
        common_model("Acme", "Hy 8", "HY-2"), m103(4321), m124(), model_regs(203, W=10, W_SF=0)
    )
    srv = await serve({1: (BASE, image)})
    (report,) = await scan_endpoint("127.0.0.1", srv.port, [1])
    text = format_text([report], "127.0.0.1", srv.port)
    assert report.roles == ["grid", "battery"]
    assert "power_w" not in report.snapshot["battery"]  # not -4321
    assert report.snapshot["battery"]["soc_pct"] == 60.5
    assert "note: hybrid without model 160" in text


async def test_hybrid_without_160_logs_once_and_keeps_battery_control(serve):
    image = sunspec_image(common_model("Acme", "Hy 8", "HY-3"), m103(3000), m124())
    srv = await serve({1: (BASE, image)})
    clock = ManualClock(T0)
    state = SiteState(clock)
    pool = EndpointPool()
    kw = {"timeout_s": 0.3, "backoff_max_s": 0.1}
    pv = sunspec_device(sunspec_cfg(srv.port, "pv", "pv", 1, **kw), pool, state, clock)
    bat = sunspec_device(sunspec_cfg(srv.port, "bat", "battery", 1, **kw), pool, state, clock)
    with capture_logs() as logs:
        assert not await pv.poll()  # no PV figure: nothing published, not a crash
        assert not await pv.poll()
        assert await bat.poll()
        assert await bat.poll()
    assert state.fresh_value("pv", Quantity.POWER_W) is None
    assert state.fresh_value("bat", Quantity.SOC_PCT) == 60.5
    assert state.fresh_value("bat", Quantity.POWER_W) is None
    notes = [e["device"] for e in logs if "without model 160" in e.get("note", "")]
    assert notes == ["pv", "bat"]  # once per device, not once per poll
    failed = [e for e in logs if e["event"] == "sunspec poll failed"]
    assert len(failed) == 1 and "no PV figure" in str(failed[0])
    await bat.set_mode(BatteryMode.POWER_SETPOINT, -1000)  # control through 124 is kept
    loc = bat.sunspec_map.find(124)
    data = decode_model(124, loc.address, await srv.get(1, loc.address, loc.length + 2))
    assert (data.get("StorCtl_Mod"), data.get("OutWRte"), data.get("InWRte")) == (3, 20, -20)
    await pool.close()
