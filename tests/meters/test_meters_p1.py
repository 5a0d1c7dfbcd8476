"""DSMR P1: the shared telegram corpus, corrupted telegrams, and a real TCP P1 port."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dsmr_parser.clients.telegram_buffer import TelegramBuffer

from hems.core.clock import ManualClock
from hems.core.readings import Quantity
from hems.core.state import SiteState
from hems.devices.meters.config import P1MeterConfig
from hems.devices.meters.p1 import MAX_TELEGRAM_CHARS, P1Error, P1Meter, feed, parse_telegram
from hil.p1_server import P1Server, P1Values, build_telegram, crc16

# expected.json names dsmr-parser specs; these are the matching `dsmr_version` settings.
VERSION = {
    "V2_2": "2.2",
    "V3": "3",
    "V4": "4",
    "V5": "5",
    "BELGIUM_FLUVIUS": "5B",
    "LUXEMBOURG_SMARTY": "5L",
    "ISKRA_IE": "ISKRA_IE",
    "EON_HUNGARY": "5EONHU",
    "SAGEMCOM_T210_D_R(plain)": "SAGEMCOM_T210_D_R",
}


def corpus(meter_data: Path) -> list[dict]:
    return json.loads((meter_data / "expected.json").read_text())["samples"]


def read(meter_data: Path, name: str) -> str:
    # Bytes as on the wire: CRLF matters for the CRC.
    return (meter_data / name).read_bytes().decode("latin-1")


def test_corpus_values_match_expected(meter_data: Path) -> None:
    checked = 0
    for s in corpus(meter_data):
        if s["expect"] != "ok" or s["dsmr_parser_spec"] not in VERSION:
            continue
        v = s["values"]
        if "power_delivered_kw" not in v:  # heat-only telegram: no electricity to read
            with pytest.raises(P1Error, match="no instantaneous power"):
                parse_telegram(read(meter_data, s["file"]), VERSION[s["dsmr_parser_spec"]])
            continue
        got = parse_telegram(read(meter_data, s["file"]), VERSION[s["dsmr_parser_spec"]])
        want_w = (v["power_delivered_kw"] - v["power_returned_kw"]) * 1000
        assert got.power_w == pytest.approx(want_w), s["file"]
        imp = v.get("electricity_delivered_total_kwh")
        if imp is None:
            imp = v["electricity_delivered_t1_kwh"] + v["electricity_delivered_t2_kwh"]
        exp = v.get("electricity_returned_total_kwh")
        if exp is None:
            exp = v["electricity_returned_t1_kwh"] + v["electricity_returned_t2_kwh"]
        assert got.import_wh == pytest.approx(imp * 1000), s["file"]
        assert got.export_wh == pytest.approx(exp * 1000), s["file"]
        if "power_delivered_l1_kw" in v:
            l1 = (v["power_delivered_l1_kw"] - v.get("power_returned_l1_kw", 0.0)) * 1000
            assert got.phases[Quantity.POWER_L1_W] == pytest.approx(l1), s["file"]
        if "current_l2_a" in v:
            assert got.phases[Quantity.CURRENT_L2_A] == pytest.approx(v["current_l2_a"])
        checked += 1
    assert checked >= 10


def test_corrupted_telegrams_are_rejected_with_a_reason(meter_data: Path) -> None:
    reasons = {
        "InvalidChecksumError": "CRC mismatch",
        "ParseError": "incomplete or malformed telegram",
        "InvalidOperation": "malformed value",
    }
    seen = 0
    for s in corpus(meter_data):
        if not s.get("corrupt") or s["expect"] == "ok":
            continue
        with pytest.raises(P1Error, match=reasons[s["expect"]]):
            parse_telegram(read(meter_data, s["file"]), "5")
        seen += 1
    assert seen == 5
    # A noise line with a valid CRC is ignored: the values are those of the clean telegram.
    ok = parse_telegram(read(meter_data, "corrupt/garbage_line_valid_crc.txt"), "5")
    assert ok == parse_telegram(read(meter_data, "telegrams/nl_v5_iskra.txt"), "5")


def test_simulated_telegram_has_a_valid_crc() -> None:
    t = build_telegram(P1Values(datetime(2026, 1, 5, 9, tzinfo=UTC), 850.0, 1_000_500, 2_000))
    body, crc = t.rsplit("!", 1)
    assert int(crc.strip(), 16) == crc16((body + "!").encode())
    got = parse_telegram(t, "5")
    assert (got.power_w, got.import_wh, got.export_wh) == (850.0, 1_002_500.0, 0.0)


async def test_p1_meter_over_real_tcp_drops_corrupt_and_reconnects() -> None:
    start = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    clock = ManualClock(start)
    state = SiteState(clock)
    tick = {"n": 0}

    def values() -> P1Values:
        tick["n"] += 1
        n = tick["n"]
        return P1Values(start + timedelta(seconds=n), 1000.0 + n, 5_000_000 + n, 0, 100, 0)

    async with P1Server(values, interval_s=0.02, corrupt_every=3) as server:
        cfg = P1MeterConfig(type="p1", id="p1", port=f"socket://127.0.0.1:{server.port}")
        meter = P1Meter(cfg, state, clock)
        task = asyncio.create_task(meter.run())
        try:
            for _ in range(200):
                if meter.telegrams_ok >= 4 and meter.telegrams_rejected >= 1:
                    break
                await asyncio.sleep(0.01)
            assert meter.telegrams_ok >= 4 and meter.telegrams_rejected >= 1
            assert "CRC mismatch" in (meter.last_error or "")
            power = state.fresh_value("p1", Quantity.POWER_W)
            assert power is not None and 1000 < power < 1300
            assert state.fresh_value("p1", Quantity.ENERGY_EXPORT_WH) == 100.0
            # The serial server drops us: the meter is marked down, then reconnects.
            ok_before = meter.telegrams_ok
            await server.drop_clients()
            for _ in range(200):
                if state.down_reason("p1"):
                    break
                await asyncio.sleep(0.01)
            assert state.is_stale("p1")
            await clock.advance(1.0)  # the reconnect backoff runs on the injected clock
            for _ in range(300):
                if meter.telegrams_ok > ok_before + 2 and not state.is_stale("p1"):
                    break
                await asyncio.sleep(0.01)
            assert meter.telegrams_ok > ok_before + 2
            assert not state.is_stale("p1")
            assert server.clients >= 2
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def test_p1_config_checks_the_port() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="socket://HOST:PORT"):
        P1MeterConfig(type="p1", id="p1", port="socket://host")
    with pytest.raises(ValidationError, match="serial device path"):
        P1MeterConfig(type="p1", id="p1", port="COM3")


def test_p1_values_from_the_simulated_home() -> None:
    from hil.home import Home, HomeConfig
    from hil.p1_server import p1_values_from_home

    home = Home(HomeConfig(seed=5, phases=3))
    at = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # the DST change night
    for _ in range(5):
        at += timedelta(minutes=1)
        state = home.step(at, 60)
    got = parse_telegram(build_telegram(p1_values_from_home(state)), "5")
    assert got.power_w == pytest.approx(state.grid_w, abs=1.0)
    assert got.import_wh == pytest.approx(state.import_wh, abs=1.0)
    assert got.export_wh == pytest.approx(state.export_wh, abs=1.0)
    assert got.phases[Quantity.POWER_L3_W] == pytest.approx(state.grid_phase_w[2], abs=1.0)


async def test_p1_port_refused_marks_down_without_crashing() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    state = SiteState(clock)
    meter = P1Meter(
        P1MeterConfig(type="p1", id="p1", port=f"socket://127.0.0.1:{port}"), state, clock
    )
    task = asyncio.create_task(meter.run())
    try:
        for _ in range(100):
            if state.down_reason("p1"):
                break
            await asyncio.sleep(0.01)
        assert "ConnectionRefusedError" in (state.down_reason("p1") or "")
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_stream_without_telegrams_cannot_grow_the_buffer() -> None:
    buffer = TelegramBuffer()
    dropped = 0
    for _ in range(100):  # 400 KiB of noise with no telegram end
        _, n = feed(buffer, "x" * 4096)
        dropped += n
        assert len(buffer._buffer) <= MAX_TELEGRAM_CHARS
    assert dropped > 300_000
    good = build_telegram(P1Values(datetime(2026, 1, 5, 9, tzinfo=UTC), 850.0, 1_000_500, 2_000))
    telegrams, _ = feed(buffer, good)
    assert telegrams == [good]  # a real telegram after the noise still gets through
    assert parse_telegram(telegrams[0], "5").power_w == 850.0
    with pytest.raises(P1Error, match="exceeds"):
        parse_telegram("/" + "x" * MAX_TELEGRAM_CHARS + "!0000\r\n", "5")
