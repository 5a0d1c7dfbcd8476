"""Glow CAD: recorded payloads parsed to the expected values, over a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from hems.core.clock import ManualClock
from hems.core.readings import Quantity
from hems.core.state import SiteState
from hems.devices.meters.config import GlowMeterConfig
from hems.devices.meters.glow import GlowError, GlowMeter, parse_glow

TOPIC = "glow/ABCDEF012345/SENSOR/electricitymeter"


def expected(meter_data: Path) -> dict:
    glow = json.loads((meter_data / "expected.json").read_text())["glow"]
    return next(g["values"] for g in glow if g["file"] == "glow/electricitymeter.json")


def test_recorded_payload_gives_expected_values(meter_data: Path) -> None:
    want = expected(meter_data)
    got = parse_glow((meter_data / "glow" / "electricitymeter.json").read_bytes())
    assert got.power_w == want["power_w"]
    assert got.import_wh == pytest.approx(want["electricity_import_cumulative_kwh"] * 1000)
    assert got.export_wh == pytest.approx(want["electricity_export_cumulative_kwh"] * 1000)
    assert got.meter_timestamp == want["timestamp"]


def _payload(meter_data: Path, **power: object) -> bytes:
    doc = json.loads((meter_data / "glow" / "electricitymeter.json").read_text())
    doc["electricitymeter"]["power"].update(power)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        ({"value": -8388.608}, "meter error value"),
        ({"value": "1.2"}, "not a number"),
        ({"units": "W"}, "unit 'W', expected 'kW'"),
    ],
)
def test_bad_payloads_are_rejected(meter_data: Path, mutate: dict, reason: str) -> None:
    with pytest.raises(GlowError, match=reason):
        parse_glow(_payload(meter_data, **mutate))


def test_gas_payload_and_garbage_are_rejected(meter_data: Path) -> None:
    with pytest.raises(GlowError, match="no 'electricitymeter'"):
        parse_glow((meter_data / "glow" / "gasmeter.json").read_bytes())
    with pytest.raises(GlowError, match="not JSON"):
        parse_glow(b"\x00\xff{")
    doc = json.loads((meter_data / "glow" / "electricitymeter.json").read_text())
    doc["electricitymeter"]["energy"]["import"]["cumulative"] = -5
    with pytest.raises(GlowError, match=r"import\.cumulative: -5"):
        parse_glow(json.dumps(doc))


async def test_glow_over_real_mosquitto(meter_data: Path, mosquitto: int) -> None:
    clock = ManualClock(datetime(2026, 3, 14, 9, 41, tzinfo=UTC))
    state = SiteState(clock)
    cfg = GlowMeterConfig(type="glow-mqtt", id="cad", host="127.0.0.1", port=mosquitto)
    meter = GlowMeter(cfg, state, clock)
    task = asyncio.create_task(meter.run())
    good = (meter_data / "glow" / "electricitymeter.json").read_bytes()
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto, identifier="test-cad") as cad:
            # Publish until the subscription is up (QoS 0, not retained: early ones are lost).
            for _ in range(200):
                await cad.publish(TOPIC, good)
                if meter.payloads_ok:
                    break
                await asyncio.sleep(0.02)
            assert state.fresh_value("cad", Quantity.POWER_W) == 1284.0
            assert state.fresh_value("cad", Quantity.ENERGY_IMPORT_WH) == 15_234_871.0
            assert state.fresh_value("cad", Quantity.ENERGY_EXPORT_WH) == 812_406.0
            await cad.publish(TOPIC, _payload(meter_data, value=-8388.608))
            await cad.publish("glow/ABCDEF012345/SENSOR/gasmeter", b"{}")  # not subscribed
            for _ in range(200):
                if meter.payloads_rejected:
                    break
                await asyncio.sleep(0.02)
        assert meter.payloads_rejected == 1
        assert "meter error value" in (meter.last_error or "")
        assert state.fresh_value("cad", Quantity.POWER_W) == 1284.0  # the bad one was not used
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_deep_or_huge_payloads_are_refused_before_parsing() -> None:
    with pytest.raises(GlowError, match="nested deeper than 8"):
        parse_glow(b'{"electricitymeter":' * 500 + b"1" + b"}" * 500)  # 10 KiB, 500 deep
    with pytest.raises(GlowError, match="exceeds 16384"):
        parse_glow(b" " * 20_000)
