"""Verified flexibility end to end, on one accelerated clock: a real Mosquitto, the HIL rig,
the daemon (uplink, flex, planner, control, web) and the reference aggregator.

The aggregator sends a signed turn-down event; the gateway accepts it (clamped to its safety
minimum), the plan and the control loop follow it, and after the window the signed delivery
report arrives: its signature verifies with the gateway's key, its baseline is the mean of the
seeded history on the ten most recent working days, its metered energy is what the daemon
recorded, and the page shows all of it. A forged event is refused with its reason and changes
nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import async_playwright

from hems.app import Daemon
from hems.config import Config, validate
from hems.core.clock import AcceleratedClock
from hems.planning.service import slot_floor
from hems.uplink import envelope
from hems.uplink.keys import load_or_create_key
from hil.aggregator import ReferenceAggregator, check_report, report_window
from hil.demo import aggregator_config, seed_meter_history
from hil.home import HomeConfig
from hil.rig import HilRig
from tests.conftest import REPO
from tests.testlib import free_port, log_in, mosquitto, poll_json, running, web_credentials
from tests.web.conftest import CHROMIUM_ARGS, chromium_path

SITE = "demo-home"
START = datetime(2026, 11, 25, 17, 20, tzinfo=UTC)  # a Wednesday; London is on UTC
SPEED = 240.0  # 42 simulated minutes in ~11 s


def flex_config(tmp_path: Path, modbus_port: int, web_port: int, broker_port: int, agg_key: str):  # type: ignore[no-untyped-def]
    """config/demo.yaml + config/demo-aggregator.yaml, paced for SPEED, without the wallbox."""
    raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    raw["devices"] = [d for d in raw["devices"] if d["type"] != "ocpp"]
    for device in raw["devices"]:
        device.update(port=modbus_port, poll_interval_s=10)
    raw["ocpp"]["enabled"] = False
    raw["planner"]["horizon_h"] = 12
    raw["planner"]["replan"] = {"min_interval_s": 300, "check_interval_s": 300}
    raw["planner"]["forecast"]["base_url"] = "http://127.0.0.1:9"  # offline: history fallback
    raw["control"]["cycle_s"] = 10
    raw["web"]["port"] = web_port
    raw["storage"] = {"path": str(tmp_path / "hems.db"), "batch_interval_s": 30}
    raw["logging"] = {"level": "warning"}
    cfg: Config = validate(raw)
    aggregator_config(cfg, broker_port, agg_key)
    cfg.flex.report_delay_s = 60
    cfg.flex.check_interval_s = 30
    cfg.uplink.resend_after_s = 600
    return cfg


def responses(agg: ReferenceAggregator) -> list[dict[str, Any]]:
    return [m["payload"] for m in agg.site(SITE).of("event_response")]


def meter_kwh(db: Path, start: datetime) -> float | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT import_wh FROM meter_intervals WHERE device_id='grid' AND period_start_ms=?",
            (int(start.timestamp() * 1000),),
        ).fetchone()
    return None if row is None or row[0] is None else row[0] / 1000


async def check_page(
    web_port: int, report: dict[str, Any], gateway_key: str, expected_kwh: float
) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await log_in(page, f"http://127.0.0.1:{web_port}")
            await page.wait_for_selector(".report[data-event='evt-1']")
            assert await page.locator("#flex-section").is_visible()
            row = await page.inner_text("#flex-events tr[data-event='evt-1']")
            assert "reported" in row and "import ≤ 0 W → import ≤ 500 W" in row, row
            cells = page.locator("#flex-events tr[data-event='evt-1']")
            assert await cells.locator(".expected").inner_text() == f"{expected_kwh:.2f}"
            delivered = f"{report['total_delivered_kwh']:.2f}"
            assert await cells.locator(".delivered").inner_text() == delivered
            forged = await page.inner_text("#flex-rejected")
            assert "bad_signature" in forged, forged
            block = await page.inner_text(".report[data-event='evt-1']")
            assert report["meter_data_sha256"] in block
            assert f"{report['total_delivered_kwh']:.2f} kWh" in block
            assert "10 baseline days" in block
            assert await page.inner_text("#gateway-key") == gateway_key
        finally:
            await browser.close()


async def test_event_report_round_trip_through_broker_daemon_and_page(tmp_path: Path) -> None:
    clock = AcceleratedClock(SPEED, START)
    agg_key = Ed25519PrivateKey.generate()
    web_port = free_port()
    rig = HilRig(clock, fault_proxy=False)
    async with mosquitto(tmp_path / "broker") as broker, rig:
        cfg = flex_config(
            tmp_path, rig.sunspec_port, web_port, broker.port,
            envelope.public_key_text(agg_key.public_key()),
        )  # fmt: skip
        db_path = Path(cfg.storage.path)
        gateway = load_or_create_key(cfg.uplink.key_path(db_path))
        added = await seed_meter_history(
            db_path, "grid", START, days=21, home=HomeConfig(seed=7), seed=7
        )
        assert added == 21 * 48
        token = await web_credentials(db_path)
        agg = ReferenceAggregator(
            "127.0.0.1", broker.port, key=agg_key,
            gateway_keys={SITE: gateway.public_key()}, clock=clock,
            resend_after_s=600, reissue_after_s=110,
        )  # fmt: skip
        daemon = Daemon(cfg, clock)
        async with running(daemon, agg):
            async with asyncio.timeout(10):
                await daemon.started.wait()
                await daemon.uplink.connected.wait()
                await agg.connected.wait()
            # The event starts on the first half hour at least 5 simulated minutes away, on
            # 2026-11-25 whatever the start took on a busy machine (at 240x a fixed 17:30
            # would already be past).
            soon = clock.now() + timedelta(minutes=5)
            event_start = slot_floor(soon - timedelta(microseconds=1), 30) + timedelta(minutes=30)
            event_end = event_start + timedelta(minutes=30)
            assert event_start.date() == START.date()
            # The capabilities come from the devices[] entries (described by the uplink).
            await agg.wait_for(lambda: bool(agg.site(SITE).of("capabilities")), 5)
            caps = agg.site(SITE).of("capabilities")[0]["payload"]
            assert caps == {
                "assets": [
                    {"asset_id": "battery", "role": "battery", "control": "power_setpoint",
                     "min_power_w": -5000.0, "max_power_w": 5000.0,
                     "energy_capacity_wh": 10000.0},
                    {"asset_id": "grid", "role": "grid", "control": "none",
                     "min_power_w": None, "max_power_w": None, "energy_capacity_wh": None},
                    {"asset_id": "pv", "role": "pv", "control": "curtail_pct",
                     "min_power_w": -3680.0, "max_power_w": 0.0, "energy_capacity_wh": None},
                ],
                "import_limit_w": 60 * 230 * 1,
                "export_limit_w": 3680.0,
            }  # fmt: skip
            payload = {
                "event_id": "evt-1",
                "modification_number": 0,
                "kind": "turn_down",
                "start": event_start.isoformat(),
                "end": event_end.isoformat(),
                "import_cap_w": 0,
            }
            sent = await agg.send_event(SITE, payload)
            await agg.wait_for(lambda: any(r["ref_id"] == sent["id"] for r in responses(agg)), 5)
            (answer,) = [r for r in responses(agg) if r["ref_id"] == sent["id"]]
            assert answer["status"] == "accepted", answer
            assert answer["clamped"] == {"import_cap_w": 500.0}  # the home's safety minimum

            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                # Forged: signed with a key the gateway does not trust.
                events_before = (await client.get("/api/events")).json()
                forged = envelope.build(
                    Ed25519PrivateKey.generate(), type_="event", site_id=SITE,
                    seq=agg.site(SITE).next_seq + 10,
                    payload={**payload, "event_id": "forged-1", "import_cap_w": 100},
                    now=clock.now(), ttl_s=600,
                )  # fmt: skip
                await agg.publish_raw(SITE, "event", envelope.encode(forged))
                await agg.wait_for(
                    lambda: any(r["ref_id"] == forged["id"] for r in responses(agg)), 5
                )
                (refused,) = [r for r in responses(agg) if r["ref_id"] == forged["id"]]
                assert (refused["status"], refused["reason"]) == ("rejected", "bad_signature")
                assert (await client.get("/api/events")).json() == events_before
                log = (await client.get("/api/flex-events")).json()
                assert [e["event_id"] for e in log["events"]] == ["evt-1"]
                assert log["rejected"][-1]["reason"] == "bad_signature"

                # The plan keeps import under the (clamped) cap during the window.
                def constrained(plan: dict[str, Any] | None) -> bool:
                    if plan is None:
                        return False
                    inside = [
                        s for s in plan["slots"]
                        if event_start <= datetime.fromisoformat(s["start"]) < event_end
                    ]  # fmt: skip
                    return bool(inside) and all(s["grid_import_w"] <= 500.5 for s in inside)

                await poll_json(client, "/api/plan", constrained, 10)
                # The page's expectation for the event, from a plan over its whole window.
                await poll_json(
                    client,
                    "/api/flex-events",
                    lambda b: b["events"][0]["expected_kwh"] is not None,
                    10,
                )

                # The control loop tracks delivery live against the baseline.
                control = await poll_json(
                    client,
                    "/api/control",
                    lambda c: (
                        c["flex"] is not None
                        and c["flex"]["active"]
                        and c["flex"]["delivered_wh"] > 0
                    ),
                    40,
                )
                live_baseline_w = control["flex"]["baseline_w"]
                assert control["flex"]["limit_w"] == 500.0

                # After the window: the signed report, verified by the aggregator.
                await agg.wait_for(lambda: bool(agg.site(SITE).of("delivery_report")), 40)
                (message,) = agg.site(SITE).of("delivery_report")
                envelope.verify_signature(message, gateway.public_key())  # raises if forged
                report = message["payload"]
                assert report["event_id"] == "evt-1"
                assert check_report(report) == []
                assert report_window(report) == (event_start, event_end)
                (period,) = report["periods"]
                assert period["metered_kwh"] == round(meter_kwh(db_path, event_start), 6)

                # The baseline is the mean of the seeded history on the 10 most recent
                # working days before the event (DFS: BL01 day selection, no adjustment).
                days = [date.fromisoformat(d) for d in report["days_used"]]
                assert len(days) == 10 and all(d.weekday() < 5 for d in days)
                assert days[0] == date(2026, 11, 24) and days[-1] == date(2026, 11, 11)
                history = [meter_kwh(db_path, event_start - (START.date() - d)) for d in days]
                assert period["unadjusted_baseline_kwh"] == round(statistics.fmean(history), 6)
                assert period["baseline_kwh"] == period["unadjusted_baseline_kwh"]
                assert period["delivered_kwh"] == round(
                    max(0.0, period["baseline_kwh"] - period["metered_kwh"]), 6
                )
                assert report["total_delivered_kwh"] > 0
                # Expected: baseline − planned net import, where the plan imports at most
                # the 500 W cap (0.25 kWh) and exports at most the 3680 W export limit.
                # Newer plans over the window may change it until the event is over; after
                # it no plan covers the window, so the value the page shows is this one.
                book = (await client.get("/api/flex-events")).json()
                expected_kwh = book["events"][0]["expected_kwh"]
                baseline_kwh = period["unadjusted_baseline_kwh"]
                assert baseline_kwh - 0.25 - 1e-3 <= expected_kwh <= baseline_kwh + 1.84 + 1e-3
                # Live tracking used the same baseline, as a mean power over the window.
                assert abs(live_baseline_w - period["unadjusted_baseline_kwh"] * 2000) < 1

                reports = await poll_json(client, "/api/reports", lambda r: len(r) == 1, 5)
                assert reports[0]["meter_data_sha256"] == report["meter_data_sha256"]
                assert reports[0]["periods"] == report["periods"]
                await check_page(web_port, report, daemon.uplink.public_key, expected_kwh)
