"""Home Assistant controls over TLS with a client certificate, on a real Mosquitto: a battery
override limited to the modes the battery offers, a flexibility opt-out button per accepted
event, per-device availability, and re-discovery under a configured prefix. The control
loop and the flex service are the real ones (the battery is the control tests' fake)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import aiomqtt
import structlog

from hems.app.hacommands import HaControls
from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.capabilities import BatteryMode
from hems.core.clock import ManualClock, RealClock
from hems.core.readings import Quantity, Reading, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.flex.config import FlexConfig
from hems.flex.events import FlexEvent
from hems.flex.service import FlexService
from hems.store.db import Database
from hems.uplink.config import HomeAssistantConfig, HomeAssistantTlsConfig
from hems.uplink.homeassistant import HomeAssistantDiscovery
from tests.control.control_helpers import T0, FakeBattery
from tests.testlib import running, wait_until

if TYPE_CHECKING:  # fixtures come from conftest.py
    from hil.aggregator import MosquittoBroker
    from tests.uplink.conftest import TlsFiles

PREFIX = "ha-test"
BASE = "hems/s1/ha"


class Ha:
    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.last: dict[str, bytes] = {}
        self.configs = 0

    async def listen(self) -> None:
        async for m in self.client.messages:
            self.last[m.topic.value] = m.payload if isinstance(m.payload, bytes) else b""
            self.configs += m.topic.value.endswith("/config")

    def state(self, key: str) -> str | None:
        raw = self.last.get(f"{BASE}/control/{key}/state")
        return None if raw is None else raw.decode()

    def config(self, component: str, key: str) -> dict[str, Any] | None:
        raw = self.last.get(f"{PREFIX}/{component}/hems_s1/{key}/config")
        return None if raw is None else (json.loads(raw) if raw else {})

    async def send(self, key: str, payload: bytes | str) -> None:
        await self.client.publish(f"{BASE}/control/{key}/set", payload, qos=1)


class Site:
    """A real control loop over a battery that offers only normal and power-setpoint."""

    def __init__(self) -> None:
        self.clock = ManualClock(T0)
        self.state = SiteState(self.clock)
        self.state.register_device("grid", Role.GRID)
        self.state.register_device("bat", Role.BATTERY)
        devices = ControlledDevices()
        modes = frozenset({BatteryMode.NORMAL, BatteryMode.POWER_SETPOINT})
        devices.add_battery(FakeBattery(modes=modes), max_charge_w=5000, max_discharge_w=5000)
        limits = LimitsConfig(fuse_a=60, phases=1, export_limit_w=3680, battery_reserve_pct=10)
        self.loop = ControlLoop(ControlConfig(strategy="self-consumption"), limits, self.state,
                                devices, self.clock, lambda: None)  # fmt: skip

    def readings(self) -> None:
        now = self.clock.now()
        self.state.publish([Reading("grid", Quantity.POWER_W, 500.0, now),
                            Reading("bat", Quantity.POWER_W, 0.0, now),
                            Reading("bat", Quantity.SOC_PCT, 60.0, now)])  # fmt: skip


@contextlib.asynccontextmanager
async def ha_client(port: int, tls: TlsFiles) -> AsyncIterator[Ha]:
    async with aiomqtt.Client("127.0.0.1", port, tls_context=tls.context("aggregator")) as c:
        ha = Ha(c)
        await c.subscribe(f"{PREFIX}/#")
        await c.subscribe(f"{BASE}/#")
        task = asyncio.create_task(ha.listen())
        try:
            yield ha
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_battery_modes_opt_out_and_availability_over_tls(
    tls_broker: MosquittoBroker, tls_files: TlsFiles, tmp_path: Path
) -> None:
    r = Site()
    db = await Database.open(tmp_path / "hems.db")
    sent: list[tuple[str, dict[str, Any]]] = []

    async def send(type_: str, payload: dict[str, Any]) -> None:
        sent.append((type_, payload))

    flex = FlexService(FlexConfig(enabled=True, meter_device_id="grid"), "Europe/London", db,
                       r.clock, send, import_limit_w=13800.0, export_limit_w=3680.0)  # fmt: skip
    start = r.clock.now() + timedelta(hours=3)
    event = FlexEvent.from_mapping({
        "event_id": "dfs/42 #x", "modification_number": 0, "kind": "turn_down",
        "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(),
        "import_cap_w": 1000.0,
    })  # fmt: skip
    assert (await flex.on_event(event)).status == "accepted"
    cert, key = tls_files.client("site-a")
    cfg = HomeAssistantConfig(
        enabled=True, broker_host="localhost", broker_port=tls_broker.port, controls=True,
        discovery_prefix=PREFIX,
        tls=HomeAssistantTlsConfig(ca_path=tls_files.ca, cert_path=cert, key_path=key),
    )  # fmt: skip
    surface = HaControls(r.clock, ZoneInfo("Europe/London"), r.loop, None, (), flex)
    bridge = HomeAssistantDiscovery(cfg, "s1", r.state, RealClock(), surface)
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(bridge), ha_client(tls_broker.port, tls_files) as ha:
                # No reading yet: the battery is offline; its first readings bring it online.
                await wait_until(lambda: ha.state("battery_mode_bat") == "auto", 15, "states")
                assert ha.last[f"{BASE}/device/bat/availability"] == b"offline"
                r.readings()
                await wait_until(
                    lambda: ha.last.get(f"{BASE}/device/bat/availability") == b"online", 15
                )
                select = ha.config("select", "battery_mode_bat")
                assert select is not None
                assert select["options"] == ["auto", "normal", "power-setpoint"]
                assert select["availability"][1] == {"topic": f"{BASE}/device/bat/availability"}

                # A mode this battery lacks, and one it offers (at the power set beside it).
                handled = bridge.commands_handled
                await ha.send("battery_mode_bat", "idle")
                await wait_until(lambda: bridge.commands_handled > handled, 15)
                assert r.loop.status()["overrides"] == {}
                await ha.send("battery_power_bat", "-2000")
                await wait_until(lambda: ha.state("battery_power_bat") == "-2000", 15)
                await ha.send("battery_mode_bat", "power-setpoint")
                await wait_until(lambda: ha.state("battery_mode_bat") == "power-setpoint", 15)
                held = r.loop.status()["overrides"]["bat"]
                assert (held["mode"], held["target"]) == ("power-setpoint", -2000.0)
                await ha.send("battery_mode_bat", "auto")
                await wait_until(lambda: ha.state("battery_mode_bat") == "auto", 15)
                assert r.loop.status()["overrides"] == {}

                # The event: its status, and a button to opt out of it.
                assert ha.state("flex_event") == "upcoming"
                buttons = [t for t, p in ha.last.items() if "/button/" in t and p]
                assert len(buttons) == 1
                button = json.loads(ha.last[buttons[0]])
                key = button["command_topic"].split("/")[-2]
                assert key.startswith("flex_opt_out_dfs_42__x_") and "state_topic" not in button
                handled = bridge.commands_handled
                await ha.send(key, "garbage")
                await wait_until(lambda: bridge.commands_handled > handled, 15)
                assert (await flex.book.current("dfs/42 #x")).status == "accepted"  # type: ignore[union-attr]
                await ha.send(key, "PRESS")
                await wait_until(lambda: ha.state("flex_event") == "none", 15, "opted out")
                assert (await flex.book.current("dfs/42 #x")).status == "opted_out"  # type: ignore[union-attr]
                assert [t for t, _ in sent] == ["event_response"]
                await wait_until(lambda: ha.last[buttons[0]] == b"", 15, "button removed")

                # HA's birth message under the configured prefix: discovery again.
                seen = ha.configs
                await ha.client.publish(f"{PREFIX}/status", "online")
                await wait_until(lambda: ha.configs >= seen + 12 + 4, 15, "re-discovery")
        rejected = [(e["entity"], e["field"], e["reason"]) for e in logs
                    if e["event"] == "home assistant command rejected"]  # fmt: skip
        assert rejected == [
            ("battery_mode_bat", "mode",
             "idle is not offered by this battery (normal, power-setpoint)"),
            (key, "payload", "a button sends PRESS"),
        ]  # fmt: skip
    finally:
        await db.close()
