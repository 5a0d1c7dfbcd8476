"""`hems scan` against a real pymodbus server, run as the real command."""

from __future__ import annotations

import asyncio
import json
import struct
import sys

import pytest
import yaml
from modbus_sim import common_model, free_port, model_regs, sunspec_image

from hems.cli.scan import parse_target
from hems.devices.modbus.config import SunSpecDeviceConfig
from hems.errors import ConfigError


async def hems(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hems.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


def images():
    inverter = sunspec_image(
        common_model("Acme", "Sol 5", "SN-42"),
        model_regs(103, W=2750, W_SF=0, WH=12345, WH_SF=0),
        model_regs(123),
        model_regs(160, N=1, DCW_SF=0, module=[{"ID": 1, "DCW": 2800}]),
    )
    meter = sunspec_image(common_model("Acme", "M3", "M-7"), model_regs(203, W=-420, W_SF=0))
    return {1: (40000, inverter), 3: (0, meter)}


async def test_modbus_scan_text_lists_models_snapshot_and_snippet(serve):
    srv = await serve(images())
    rc, out, err = await hems("scan", f"127.0.0.1:{srv.port}", "--unit", "1", "--unit", "3")
    assert rc == 0, err
    assert f"tcp://127.0.0.1:{srv.port} unit 1: sunspec" in out
    assert "device: Acme / Sol 5 / SN-42" in out
    assert "SunSpec base 40000; models:" in out
    assert "103  inverter 3-phase" in out and "at 40070" in out
    assert "160  MPPT" in out
    assert "power_w              2750" in out
    assert "unit 3: sunspec" in out and "SunSpec base 0" in out
    assert "power_w              -420" in out
    assert "role: grid" in out and "base_address: 0" in out


async def test_modbus_scan_json_snippet_is_a_valid_config_entry(serve):
    srv = await serve(images())
    rc, out, err = await hems("scan", f"127.0.0.1:{srv.port}", "--json")
    assert rc == 0, err
    (report,) = json.loads(out)
    assert report["kind"] == "sunspec" and report["serial"] == "SN-42"
    assert [m["model_id"] for m in report["models"]] == [1, 103, 123, 160]
    assert report["snapshot"]["pv"]["power_w"] == 2750
    (entry,) = yaml.safe_load(report["config"])
    cfg = SunSpecDeviceConfig.model_validate(entry)
    assert (cfg.port, cfg.unit_id, cfg.role) == (srv.port, 1, "pv")


async def test_modbus_scan_nothing_there_exits_1_with_reason():
    rc, out, _err = await hems("scan", f"127.0.0.1:{free_port()}", "--timeout", "0.3")
    assert rc == 1
    assert "unit 1: none" in out and "cannot connect" in out
    rc, out, _err = await hems("scan", f"127.0.0.1:{free_port()}", "--json", "--timeout", "0.3")
    (report,) = json.loads(out)  # nothing but the report on stdout
    assert rc == 1 and report["kind"] == "none" and "cannot connect" in report["error"]


async def test_modbus_scan_bad_target_exits_2():
    rc, _out, err = await hems("scan", "gateway:70000")
    assert rc == 2 and "hems scan: target: 'gateway:70000': port must be 1..65535" in err


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("inv", "inv", 502), ("10.0.0.5:1502", "10.0.0.5", 1502), ("[fe80::1]:503", "fe80::1", 503)],
)
def test_modbus_scan_parse_target(text, host, port):
    assert parse_target(text) == (host, port)


@pytest.mark.parametrize("bad", [":502", "h:x", "[::1", "h:0"])
def test_modbus_scan_parse_target_rejects(bad):
    with pytest.raises(ConfigError, match="target"):
        parse_target(bad)


async def test_modbus_scan_non_sunspec_unit_matches_a_profile(serve):
    def f32(value: float) -> list[int]:
        return list(struct.unpack(">HH", struct.pack(">f", value)))

    regs = [0] * 0x180
    regs[0x34:0x36] = f32(-1234.5)  # SDM630 total power
    regs[0x46:0x48] = f32(50.02)  # frequency: the identification register
    srv = await serve({1: (0, regs)})
    rc, out, err = await hems("scan", f"127.0.0.1:{srv.port}", "--json")
    assert rc == 0, err
    (report,) = json.loads(out)
    assert report["kind"] == "profile"
    assert "eastron-sdm630" in report["profiles"]
    (entry, *_) = yaml.safe_load(report["config"])
    assert entry["type"] == "modbus-profile" and entry["profile"] == report["profiles"][0]
    assert report["profile_values"], "a decoded snapshot of the profile's registers"
