"""Home Assistant, two-way, on the real daemon (HIL rig) and a real Mosquitto: an aiomqtt
client acting as HA receives discovery, reads the entities' states, sets an EV target, a
departure, a mode and a battery override, and sees the plan and the devices follow; a page
change shows in HA; HA's birth message brings discovery again; bad commands are rejected by
field, logged, and change nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import httpx
import pytest
import structlog

from hems.app import Daemon
from hems.config import validate
from hems.core.clock import AcceleratedClock
from hems.core.readings import Quantity
from hems.uplink.homeassistant import HomeAssistantDiscovery
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import mosquitto, rig_with_car, running, wait_until, web_credentials

BASE = "hems/demo-home/ha"
CFG = "homeassistant"
PASSWORD = "s3cret-ha-password"


class FakeHa:
    """What Home Assistant keeps: the last payload per topic."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.last: dict[str, bytes] = {}
        self.configs_seen = 0

    async def listen(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            self.last[m.topic.value] = payload
            if m.topic.value.endswith("/config"):
                self.configs_seen += 1

    def state(self, key: str) -> str | None:
        raw = self.last.get(f"{BASE}/control/{key}/state")
        return None if raw is None else raw.decode()

    def config(self, component: str, key: str) -> dict[str, Any]:
        return json.loads(self.last[f"{CFG}/{component}/hems_demo-home/{key}/config"])

    async def send(self, key: str, payload: bytes | str, *, retain: bool = False) -> None:
        await self.client.publish(f"{BASE}/control/{key}/set", payload, qos=1, retain=retain)


@contextlib.asynccontextmanager
async def fake_ha(port: int) -> AsyncIterator[FakeHa]:
    async with aiomqtt.Client("127.0.0.1", port, username="ha", password="ha") as client:
        ha = FakeHa(client)
        await client.subscribe(f"{CFG}/#")
        await client.subscribe(f"{BASE}/#")
        task = asyncio.create_task(ha.listen())
        try:
            yield ha
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def planned_ev_wh(daemon: Daemon) -> float:
    plan = daemon.planner.current_plan if daemon.planner else None
    if plan is None:
        return 0.0
    return sum(s.targets_w.get("wallbox", 0.0) * s.duration_s / 3600 for s in plan.slots)


@pytest.mark.timeout(300)  # one daemon for the whole conversation; about 70 s on the rig
async def test_home_assistant_sets_ev_and_battery_and_sees_them_follow(tmp_path: Path) -> None:
    clock = AcceleratedClock(10, datetime(2026, 6, 10, 18, 0, tzinfo=UTC))  # peak: the plan waits
    tz = ZoneInfo("Europe/London")
    rig, _car, ocpp_port, web_port = rig_with_car(clock)
    async with mosquitto(tmp_path / "mqtt") as broker, rig:
        raw = demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port)
        raw["uplink"] = {"home_assistant": {
            "enabled": True, "broker_host": "127.0.0.1", "broker_port": broker.port,
            "username": "hems", "password": PASSWORD, "controls": True, "state_interval_s": 1,
        }}  # fmt: skip
        cfg = validate(raw)
        token = await web_credentials(cfg.storage.path)
        daemon = Daemon(cfg, clock)
        with structlog.testing.capture_logs() as logs:
            async with running(daemon), fake_ha(broker.port) as ha:
                await asyncio.wait_for(daemon.started.wait(), 15)
                bridge = daemon.services["home-assistant"]
                assert isinstance(bridge, HomeAssistantDiscovery)
                control, sessions = daemon.control, daemon.ev_sessions
                assert control is not None and sessions is not None

                # Discovery: sensors with Energy-dashboard classes, and the controls.
                await wait_until(lambda: ha.state("ev_target_wallbox") == "15", 30, "session")
                energy = ha.config("sensor", "grid_import_energy_kwh")
                assert (energy["device_class"], energy["state_class"]) == (
                    "energy", "total_increasing",
                )  # fmt: skip
                mode_cfg = ha.config("select", "ev_mode_wallbox")
                assert mode_cfg["options"] == ["plan", "min-pv", "pv-only", "fast", "off"]
                assert mode_cfg["command_topic"] == f"{BASE}/control/ev_mode_wallbox/set"
                assert {"topic": f"{BASE}/device/wallbox/availability"} in mode_cfg["availability"]
                offered = control.battery_modes()["battery"]
                battery_cfg = ha.config("select", "battery_mode_battery")
                assert battery_cfg["options"] == ["auto", *offered]
                assert ha.config("number", "ev_target_wallbox")["unit_of_measurement"] == "kWh"
                assert "pattern" in ha.config("text", "ev_departure_wallbox")
                await wait_until(
                    lambda: ha.last.get(f"{BASE}/device/wallbox/availability") == b"online"
                    and ha.last.get(f"{BASE}/device/battery/availability") == b"online"
                    and ha.last.get(f"{BASE}/availability") == b"online",
                    20,
                    "availability",
                )  # fmt: skip
                assert ha.state("ev_mode_wallbox") == "plan"
                assert ha.state("battery_mode_battery") == "auto"
                assert ha.state("battery_minutes_battery") == "60"
                await wait_until(
                    lambda: json.loads(ha.last[f"{BASE}/state"])["battery_soc_pct"] is not None,
                    15,
                    "the site figures",
                )

                # Target and departure: the session and the plan follow.
                await wait_until(lambda: planned_ev_wh(daemon) > 10_000, 60, "first plan")
                await ha.send("ev_target_wallbox", "30")
                await wait_until(lambda: ha.state("ev_target_wallbox") == "30", 15, "target")
                session = sessions.session("wallbox")
                assert session is not None and session.energy_wh == 30_000
                await wait_until(lambda: planned_ev_wh(daemon) > 25_000, 60, "plan for 30 kWh")
                await ha.send("ev_departure_wallbox", "05:00")
                await wait_until(lambda: ha.state("ev_departure_wallbox") == "05:00", 15, "dep")
                session = sessions.session("wallbox")
                assert session is not None and session.energy_wh == 30_000  # kept
                assert session.departure.astimezone(tz).strftime("%H:%M") == "05:00"

                # Mode: the charger follows (fast charges now, at the evening peak).
                assert (daemon.state.fresh_value("wallbox", Quantity.POWER_W) or 0) < 500
                await ha.send("ev_mode_wallbox", "fast")
                await wait_until(lambda: ha.state("ev_mode_wallbox") == "fast", 15, "mode")
                assert control.ev_mode("wallbox") == "fast"
                await wait_until(
                    lambda: (daemon.state.fresh_value("wallbox", Quantity.POWER_W) or 0) > 3000,
                    60,
                    "the charger charges",
                )

                # Battery override: held idle, with the duration set beside it.
                assert "idle" in offered
                await ha.send("battery_minutes_battery", "30")
                await wait_until(lambda: ha.state("battery_minutes_battery") == "30", 15)
                await ha.send("battery_mode_battery", "idle")
                await wait_until(lambda: ha.state("battery_mode_battery") == "idle", 15, "held")
                held = control.status()["overrides"]["battery"]
                assert held["mode"] == "idle"
                until = datetime.fromisoformat(held["expires_at"])
                assert abs((until - clock.now()).total_seconds() - 30 * 60) < 120
                await wait_until(
                    lambda: ha.state("battery_mode_until_battery") == held["expires_at"], 15
                )

                def idles() -> bool:
                    power_w = daemon.state.fresh_value("battery", Quantity.POWER_W)
                    device = control.status()["devices"]["battery"]  # type: ignore[union-attr]
                    return (
                        power_w is not None
                        and abs(power_w) < 100
                        and device["command"]["mode"] == "idle"
                        and device["verified"]
                    )

                await wait_until(idles, 60, "the battery idles")

                # A change on the page (the API) shows in HA.
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{web_port}",
                    headers={"Authorization": f"Bearer {token}"},
                ) as web:
                    r = await web.post(
                        "/api/ev-mode", json={"charger_id": "wallbox", "mode": "pv-only"}
                    )
                    assert r.status_code == 200, r.text
                await wait_until(lambda: ha.state("ev_mode_wallbox") == "pv-only", 15, "page")

                # Bad commands: each rejected by field and logged; nothing changes.
                bad: list[tuple[str, bytes, str]] = [
                    ("ev_mode_wallbox", b"turbo", "mode"),
                    ("ev_departure_wallbox", b"25:99", "departure"),
                    ("ev_target_wallbox", b"500", "energy_wh"),
                    ("ev_target_wallbox", b"lots", "energy_kwh"),
                    ("ev_mode_nope", b"fast", "entity"),
                    ("battery_mode_battery", b"turbo", "mode"),
                    ("battery_minutes_battery", b"0", "minutes"),
                    ("ev_mode_wallbox", b"\xff\xfe\x00garbage", "payload"),
                ]
                before = (
                    control.ev_mode("wallbox"),
                    sessions.session("wallbox"),
                    control.status()["overrides"],
                    ha.state("battery_minutes_battery"),
                )
                handled = bridge.commands_handled
                for key, payload, _ in bad:
                    await ha.send(key, payload)
                await ha.send("ev_mode_wallbox", "off", retain=True)  # never from retained
                await wait_until(lambda: bridge.commands_handled >= handled + len(bad) + 1, 15)
                after = (
                    control.ev_mode("wallbox"),
                    sessions.session("wallbox"),
                    control.status()["overrides"],
                    ha.state("battery_minutes_battery"),
                )
                assert after == before
                assert ha.state("ev_mode_wallbox") == "pv-only"
                rejected = [e for e in logs if e["event"] == "home assistant command rejected"]
                assert [(e["entity"], e["field"]) for e in rejected] == [
                    (key, field) for key, _, field in bad
                ] + [("ev_mode_wallbox", "retain")]
                assert rejected[5]["reason"] == "unknown battery mode 'turbo'"
                # The client lives on: a valid command after the garbage is applied.
                await ha.client.publish(f"{BASE}/control/ev_mode_wallbox/set", b"", retain=True)
                await ha.send("ev_mode_wallbox", "plan")
                await wait_until(lambda: control.ev_mode("wallbox") == "plan", 15, "alive")

                # HA restarts: its birth message brings every discovery config again.
                announced, seen = bridge.announced, ha.configs_seen
                await ha.client.publish(f"{CFG}/status", "online")
                await wait_until(lambda: bridge.announced > announced, 15, "re-announced")
                await wait_until(lambda: ha.configs_seen >= seen + 12 + 7, 15, "configs again")
        accepted = [e for e in logs if e["event"] == "home assistant command accepted"]
        wanted = {"ev_mode_wallbox", "battery_mode_battery", "ev_target_wallbox",
                  "ev_departure_wallbox", "battery_minutes_battery"}  # fmt: skip
        assert {e["entity"] for e in accepted} >= wanted
        assert PASSWORD not in repr(logs)  # secrets are never logged
