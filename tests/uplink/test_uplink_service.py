"""The Uplink's own surface without a broker: payload checks, telemetry, signed rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.core.clock import ManualClock
from hems.core.quantities import site_values
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.errors import ConfigError, UplinkError
from hems.store.db import Database
from hems.uplink import envelope
from hems.uplink.channel import Backoff, Uplink
from hems.uplink.config import UplinkConfig

AGG = Ed25519PrivateKey.generate()
START = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)


def cfg(**kw: object) -> UplinkConfig:
    return UplinkConfig(
        enabled=True, aggregator_public_key=envelope.public_key_text(AGG.public_key()), **kw
    )


async def test_send_checks_the_payload_and_signs_what_it_stores(tmp_path: Path) -> None:
    clock = ManualClock(START)
    db = await Database.open(tmp_path / "hems.db")
    up = Uplink(cfg(), "home-1", SiteState(clock), db, clock, storage_path=tmp_path / "hems.db")
    assert (tmp_path / "gateway_ed25519.pem").exists()  # generated on first use
    with pytest.raises(UplinkError, match=r"^meter_interval\.quality: "):
        await up.send("meter_interval", {"period_start": "2026-11-27T16:30:00Z",
                                         "period_end": "2026-11-27T17:00:00Z",
                                         "import_kwh": 1, "export_kwh": 0,
                                         "quality": "guessed"})  # fmt: skip
    with pytest.raises(UplinkError, match="cannot be sent"):
        await up.send("event", {})
    assert await up.outbox.count() == 0  # nothing half-stored
    seq = await up.send("flex_offer", {"offer_id": "o1", "periods": []})
    [row] = await up.outbox.pending()
    assert row.seq == seq and row.topic == "hems/v1/home-1/up/flex/offer"
    msg = envelope.parse(row.message)
    checked = envelope.check(
        msg, key=envelope.load_public_key(up.public_key), site_id="home-1", now=START,
        last_seq=0, seen=lambda _: False, max_skew_s=120,
    )  # fmt: skip
    assert checked.envelope.issued_at == START
    await db.close()


async def test_telemetry_uses_role_totals_and_null_for_stale(tmp_path: Path) -> None:
    clock = ManualClock(START)
    db = await Database.open(tmp_path / "hems.db")
    state = SiteState(clock, stale_after_s=30)
    for device, role in [("meter", Role.GRID), ("inv", Role.PV), ("bat", Role.BATTERY)]:
        state.register_device(device, role)
    state.publish([
        Reading("meter", Quantity.POWER_W, -800.0, START),
        Reading("inv", Quantity.POWER_W, 2500.0, START),
        Reading("bat", Quantity.POWER_W, 1200.0, START),
        Reading("bat", Quantity.SOC_PCT, 64.0, START),
    ])  # fmt: skip
    up = Uplink(cfg(), "home-1", state, db, clock, key=Ed25519PrivateKey.generate())
    t = up.telemetry()
    assert (t.grid_w, t.pv_w, t.battery_w, t.soc_pct, t.ev_w) == (-800, 2500, 1200, 64, None)
    await clock.advance(31)
    state.publish([Reading("meter", Quantity.POWER_W, 300.0, clock.now())])
    t = up.telemetry()
    assert t.grid_w == 300 and t.pv_w is None and t.soc_pct is None  # stale: unknown, not 0
    await db.close()


async def test_telemetry_maps_the_site_quantities_onto_its_wire_names(tmp_path: Path) -> None:
    clock = ManualClock(START)
    db = await Database.open(tmp_path / "hems.db")
    state = SiteState(clock, stale_after_s=30)
    for device, role in [("meter", Role.GRID), ("b1", Role.BATTERY), ("b2", Role.BATTERY),
                         ("cp", Role.EV)]:  # fmt: skip
        state.register_device(device, role)
    state.publish([Reading("b2", Quantity.SOC_PCT, 80.0, START)])
    await clock.advance(31)
    state.publish([
        Reading("meter", Quantity.POWER_W, 4200.0, clock.now()),
        Reading("b1", Quantity.POWER_W, 0.0, clock.now()),
        Reading("b1", Quantity.SOC_PCT, 40.0, clock.now()),
        Reading("b2", Quantity.POWER_W, 0.0, clock.now()),
        Reading("cp", Quantity.POWER_W, 3700.0, clock.now()),
    ])  # fmt: skip
    up = Uplink(cfg(), "home-1", state, db, clock, key=Ed25519PrivateKey.generate())
    wire = up.telemetry().model_dump(mode="json")
    assert set(wire) == {"at", "grid_w", "pv_w", "battery_w", "soc_pct", "ev_w"}  # unchanged
    v = site_values(state)
    assert (wire["grid_w"], wire["pv_w"], wire["battery_w"], wire["soc_pct"], wire["ev_w"]) == (
        v["grid_power_w"], v["pv_power_w"], v["battery_power_w"], v["battery_soc_pct"],
        v["ev_power_w"],
    )  # fmt: skip
    assert wire["soc_pct"] is None and wire["battery_w"] == 0.0  # b2's SoC is stale
    await db.close()


def test_missing_aggregator_key_and_backoff_bounds() -> None:
    with pytest.raises(ConfigError, match="aggregator_public_key"):
        Uplink(UplinkConfig(), "s", None, None, None)  # type: ignore[arg-type]
    b = Backoff(1.0, 8.0)
    delays = [b.next_s() for _ in range(20)]
    assert all(1.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 1  # jittered
    b.reset()
    assert b.next_s() == 1.0  # first retry right at the minimum
