"""SunSpec discovery and decoding against real pymodbus servers, images built by pysunspec2."""

from __future__ import annotations

import struct

import pytest
from modbus_sim import END, SUNS, common_model, model_regs, sunspec_image

from hems.devices.modbus.engine import EndpointPool, EndpointSpec
from hems.devices.modbus.sunspec import (
    ModelMoved,
    NotSunSpec,
    decode_model,
    discover,
    encode_point,
    read_models,
)
from hems.errors import BadValue

FAST = {"timeout_s": 0.3, "backoff_initial_s": 0.05, "backoff_max_s": 0.2}


def endpoint(port: int):
    return EndpointPool().get(EndpointSpec(host="127.0.0.1", port=port, **FAST))


def f32(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


@pytest.mark.parametrize("base", [40000, 0, 50000])
async def test_modbus_sunspec_discovery_at_each_base_walks_the_chain(serve, base):
    inv = model_regs(103, W=2500, W_SF=0)
    image = sunspec_image(common_model(), inv, model_regs(123))
    srv = await serve({1: (base, image)})
    ep = endpoint(srv.port)
    smap = await discover(ep, 1)
    assert smap.base == base
    assert smap.ids == [1, 103, 123]
    assert [m.address for m in smap.models] == [base + 2, base + 2 + 68, base + 2 + 68 + 52]
    assert smap.find(113, 103).model_id == 103
    await ep.close()


async def test_modbus_sunspec_no_marker_is_a_clear_error(serve):
    srv = await serve({1: (40000, [1, 2, 3, 4])})
    ep = endpoint(srv.port)
    with pytest.raises(NotSunSpec) as info:
        await discover(ep, 1)
    assert str(info.value) == (
        f"tcp://127.0.0.1:{srv.port} unit 1: no SunSpec 'SunS' marker at "
        "40000 (0x0001 0x0002), 0 (exception 2 (illegal data address)), "
        "50000 (exception 2 (illegal data address))"
    )
    await ep.close()


async def test_modbus_sunspec_chain_without_end_marker_ends_where_registers_end(serve):
    image = [*SUNS, *common_model(), *model_regs(203)]  # no 0xFFFF end marker
    srv = await serve({1: (40000, image)})
    ep = endpoint(srv.port)
    assert (await discover(ep, 1)).ids == [1, 203]
    await ep.close()


async def test_modbus_sunspec_impossible_length_is_rejected(serve):
    image = [*SUNS, 103, 0, *END]
    srv = await serve({1: (40000, image)})
    ep = endpoint(srv.port)
    with pytest.raises(NotSunSpec, match="model 103 at register 40002 has impossible length 0"):
        await discover(ep, 1)
    await ep.close()


async def test_modbus_sunspec_read_models_decodes_and_checks_headers(serve):
    image = sunspec_image(
        common_model("Fronius", "Primo 5.0", "12345678"),
        model_regs(103, W=31415, W_SF=-1, WH=987654, WH_SF=0, Hz=5001, Hz_SF=-2),
    )
    srv = await serve({1: (40000, image)})
    ep = endpoint(srv.port)
    smap = await discover(ep, 1)
    models = await read_models(ep, 1, list(smap.models))
    assert ep.stats.requests == 3 + 2  # marker + 3 headers incl. end, then one coalesced block
    assert models[1].get("Mn") == "Fronius" and models[1].get("SN") == "12345678"
    assert models[103].get("W") == 3141.5
    assert models[103].get("WH") == 987654
    assert models[103].get("Hz") == 50.01
    assert models[103].get("TmpCab") is None  # not implemented, never 0
    # Firmware update moves the models: the header check notices.
    await srv.set(1, 40002, [103])
    with pytest.raises(ModelMoved, match="register 40002 now holds model 103"):
        await read_models(ep, 1, list(smap.models))
    await ep.close()


# -- decoding, pure ------------------------------------------------------------------------

SUPPORTED = [1, 101, 102, 103, 111, 112, 113, 120, 121, 122, 123, 124, 160]
SUPPORTED += [201, 202, 203, 204, 211, 212, 213, 214, 701, 702, 703, 704, 713, 802]


@pytest.mark.parametrize("model_id", SUPPORTED)
def test_modbus_sunspec_every_supported_model_decodes_sentinels_to_none(model_id):
    regs = model_regs(model_id)
    data = decode_model(model_id, 40002, regs)
    assert data.get("ID") == model_id and data.get("L") == len(regs) - 2
    values = {k: v for k, v in data.as_dict().items() if k not in ("ID", "L")}
    assert values, "model has points"
    # An empty image is all "not implemented": nothing may come out as 0 or as a number.
    assert [k for k, v in values.items() if v not in (None, "")] == []
    assert all(p.bad is None for p in data.points.values())


@pytest.mark.parametrize(
    ("model_id", "points", "expected"),
    [
        (101, {"W": 1234, "W_SF": 0, "A": 525, "A_SF": -2}, {"W": 1234, "A": 5.25}),
        (103, {"W": -150, "W_SF": 1, "WH": 4000000000, "WH_SF": 0}, {"W": -1500, "WH": 4e9}),
        (113, {"W": 2345.5, "Hz": 49.98, "WH": 1.5e6}, {"W": 2345.5, "Hz": 49.98, "WH": 1.5e6}),
        (120, {"WRtg": 50, "WRtg_SF": 2, "DERTyp": 4}, {"WRtg": 5000, "DERTyp": 4}),
        (121, {"WMax": 5000, "WMax_SF": 0}, {"WMax": 5000}),
        (122, {"PVConn": 7, "ECPConn": 1}, {"PVConn": 7, "ECPConn": 1}),
        (
            123,
            {"WMaxLimPct": 600, "WMaxLimPct_SF": -1, "WMaxLim_Ena": 1},
            {"WMaxLimPct": 60.0, "WMaxLim_Ena": 1},
        ),
        (
            124,
            {
                "WChaMax": 5000,
                "WChaMax_SF": 0,
                "ChaState": 4550,
                "ChaState_SF": -2,
                "StorCtl_Mod": 2,
                "InWRte": -2500,
                "InOutWRte_SF": -2,
            },
            {"WChaMax": 5000, "ChaState": 45.5, "StorCtl_Mod": 2, "InWRte": -25.0},
        ),
        (
            203,
            {
                "W": -3210,
                "W_SF": 0,
                "TotWhImp": 123456,
                "TotWhExp": 654,
                "TotWh_SF": 1,
                "AphA": 105,
                "A_SF": -1,
            },
            {"W": -3210, "TotWhImp": 1234560, "TotWhExp": 6540, "AphA": 10.5},
        ),
        (213, {"W": 1200.25, "TotWhImp": 5e5, "Hz": 50.0}, {"W": 1200.25, "TotWhImp": 5e5}),
        (
            701,
            {"W": 4200, "W_SF": 0, "TotWhInj": 10**10, "TotWh_SF": 0},
            {"W": 4200, "TotWhInj": 10**10},
        ),
        (
            704,
            {"WMaxLimPctEna": 1, "WMaxLimPct": 80, "WMaxLimPct_SF": 0},
            {"WMaxLimPctEna": 1, "WMaxLimPct": 80},
        ),
        (713, {"SoC": 555, "Pct_SF": -1, "WHRtg": 100, "WH_SF": 2}, {"SoC": 55.5, "WHRtg": 10000}),
        (802, {"SoC": 73, "SoC_SF": 0, "W": -1800, "W_SF": 0}, {"SoC": 73, "W": -1800}),
    ],
)
def test_modbus_sunspec_decodes_scaled_values(model_id, points, expected):
    data = decode_model(model_id, 40002, model_regs(model_id, **points))
    for name, value in expected.items():
        assert data.get(name) == pytest.approx(value), name


def test_modbus_sunspec_repeating_groups_of_model_160():
    modules = [{"ID": 1, "DCW": 1500, "DCV": 4000}, {"ID": 2, "DCW": 1250, "DCV": 3900}]
    regs = model_regs(160, N=2, DCW_SF=0, DCV_SF=-1, module=modules)
    data = decode_model(160, 40100, regs)
    assert data.get("N") == 2
    assert data.get("module[1].DCW") == 1500 and data.get("module[2].DCW") == 1250
    assert data.get("module[2].DCV") == 390.0
    assert data.points["module[2].DCW"].address > data.points["module[1].DCW"].address


def test_modbus_sunspec_sentinels_and_bad_values():
    regs = model_regs(103, W=100, W_SF=0, A=5, A_SF=-1)
    off = {name: p.address - 40002 for name, p in decode_model(103, 40002, regs).points.items()}
    # Scale factor "not implemented" with an implemented value: bad, never unscaled.
    bad_sf = list(regs)
    bad_sf[off["W_SF"]] = 0x8000
    data = decode_model(103, 40002, bad_sf)
    assert data.get("W") is None
    assert "W_SF is not implemented" in (data.points["W"].bad or "")
    with pytest.raises(BadValue, match=r"model 103 point W \(register 40016\): scale factor"):
        data.require("inv", "W")
    # Scale factor out of range.
    wild = list(regs)
    wild[off["A_SF"]] = 99
    assert "outside -10..10" in (decode_model(103, 40002, wild).points["A"].bad or "")
    # int16 sentinel 0x8000 is "not implemented": None, and require() says so.
    unimpl = list(regs)
    unimpl[off["W"]] = 0x8000
    data = decode_model(103, 40002, unimpl)
    assert data.get("W") is None and data.points["W"].bad is None
    with pytest.raises(BadValue, match=r"register 40016.*not implemented"):
        data.require("inv", "W")


@pytest.mark.parametrize(
    ("words", "value", "bad"),
    [
        ([0x7FC0, 0x0000], None, None),  # the SunSpec NaN: not implemented
        ([0x7F80, 0x0000], None, "inf"),
        ([0xFF80, 0x0000], None, "-inf"),
        ([0x7FC0, 0x0001], None, "nan"),  # any other NaN is garbage
        (f32(-1234.5), -1234.5, None),
    ],
)
def test_modbus_sunspec_float_nan_and_inf(words, value, bad):
    regs = model_regs(213, W=1.0)
    base = decode_model(213, 40002, regs)
    i = base.points["W"].address - 40002
    regs[i : i + 2] = words
    p = decode_model(213, 40002, regs).points["W"]
    assert p.value == value
    if bad is None:
        assert p.bad is None
    else:
        assert bad in (p.bad or "").lower()


def test_modbus_sunspec_truncated_model_is_bad_value():
    regs = model_regs(160, N=2, module=[{"ID": 1}, {"ID": 2}])
    with pytest.raises(BadValue, match="model 160 at 40002"):
        decode_model(160, 40002, regs[:-5])


def test_modbus_sunspec_encode_point_uses_fresh_scale_factor():
    data = decode_model(123, 40100, model_regs(123, WMaxLimPct=1000, WMaxLimPct_SF=-1))
    address, words = encode_point(data, "WMaxLimPct", 55.5, "inv")
    assert address == data.points["WMaxLimPct"].address and words == [555]
    data124 = decode_model(124, 40200, model_regs(124, InOutWRte_SF=-2, WChaMax_SF=0))
    assert encode_point(data124, "OutWRte", -25.0, "bat")[1] == [0x10000 - 2500]
    no_sf = decode_model(124, 40200, model_regs(124))
    with pytest.raises(BadValue, match="scale factor InOutWRte_SF unusable"):
        encode_point(no_sf, "InWRte", 10.0, "bat")
    with pytest.raises(BadValue, match="not a number"):
        encode_point(data, "WMaxLimPct", float("nan"), "inv")


@pytest.mark.parametrize("model_id", [111, 112, 113])
def test_a_short_block_is_a_bad_value_not_an_index_error(model_id: int) -> None:
    with pytest.raises(BadValue, match=rf"model {model_id} at 40002: block of 2 registers"):
        decode_model(model_id, 40002, [model_id, 0])


def test_repeat_counts_larger_than_the_block_are_refused_before_pysunspec2() -> None:
    regs = [705, 50] + [0] * 50
    regs[5], regs[6] = 1000, 1000  # NPt, NCrv: a million points declared in 52 registers
    # The message is ours, so pysunspec2's slow length calculation never ran.
    with pytest.raises(BadValue, match="Crv repeats 1000 times"):
        decode_model(705, 40002, regs)
