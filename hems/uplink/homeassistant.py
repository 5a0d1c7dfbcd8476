"""Home Assistant over MQTT on the home's own broker (optional), both ways.

Out: one sensor per row of hems.core.quantities.SITE_QUANTITIES (a new figure there is a new
sensor here) with its unit, device and state class, so the energy counters feed HA's Energy
dashboard; the state is one JSON object read by value templates (null renders as None, which
HA takes as unknown). The gateway's availability is its last will; every configured device
has its own availability topic, online while its readings are fresh.

In (when a `ControlSurface` is given): control entities (selects, numbers, texts, buttons)
with one command topic each. This module only carries them: the surface (hems.app.hacommands)
says which entities exist, what their states are and what a command does, with the same
validation as the web page. Commands are never taken from retained messages (a retained
command would be applied again at every reconnect).

Discovery configs and states are retained; discovery is sent again when Home Assistant
announces itself (`{discovery_prefix}/status` = `online`), and entities that disappear (a
flexibility event that ended) get an empty retained config, which removes them from HA.

Topics (`{base}` = `hems/{site_id}/ha`):
  {base}/availability                     gateway: online / offline (last will)
  {base}/device/{device_id}/availability  per device: online / offline
  {base}/state                            the site quantities (JSON)
  {base}/control/{key}/state              a control entity's state
  {base}/control/{key}/set                a control entity's command
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiomqtt
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from hems.core.clock import Clock
from hems.core.integrate import SplitEnergy
from hems.core.quantities import SITE_QUANTITIES, SiteQuantity, site_values
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.errors import ConfigError
from hems.uplink.config import HomeAssistantConfig

log = structlog.get_logger(__name__)


SENSORS: tuple[SiteQuantity, ...] = SITE_QUANTITIES  # one sensor per site quantity

# Battery energy in and out: no driver publishes a counter, so the bridge integrates the
# batteries' power (hems.core.integrate; from 0 at each start, which HA reads as a new cycle).
BATTERY_ENERGY: tuple[tuple[str, str, str], ...] = (
    ("battery_charge_energy_kwh", "Battery charge energy", "mdi:battery-plus"),
    ("battery_discharge_energy_kwh", "Battery discharge energy", "mdi:battery-minus"),
)

Component = Literal["select", "number", "text", "button", "sensor", "switch"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlEntity:
    """One entity the surface offers. `key` ([a-z0-9_-]) is its topic segment and unique id
    suffix; `device_id` the hems device it acts on (its availability applies); `fields` the
    component's own discovery fields (options, min, max, pattern, payload_press, …)."""

    component: Component
    key: str
    name: str
    device_id: str | None = None
    fields: Mapping[str, object] = field(default_factory=dict)
    commandable: bool = True
    stateful: bool = True


class ControlSurface(Protocol):
    async def entities(self) -> list[ControlEntity]:
        """The control entities now (may change: an event's opt-out button)."""
        ...

    async def states(self) -> dict[str, str]:
        """Entity key → state payload, for the stateful entities."""
        ...

    async def command(self, key: str, payload: bytes) -> bool:
        """Apply one command; True if accepted. Logs it either way; never raises for bad
        input (an unknown key, a payload that does not validate, garbage bytes)."""
        ...


def base_topic(site_id: str) -> str:
    return f"hems/{site_id}/ha"


def device_availability_topic(site_id: str, device_id: str) -> str:
    return f"{base_topic(site_id)}/device/{device_id}/availability"


def _node(site_id: str) -> str:
    return f"hems_{site_id}"


def _gateway_device(site_id: str) -> dict[str, object]:
    node = _node(site_id)
    return {"identifiers": [node], "name": f"hems {site_id}", "manufacturer": "hems"}


def discovery_messages(site_id: str, prefix: str) -> dict[str, dict[str, object]]:
    """topic -> retained discovery config, for every sensor."""
    node = _node(site_id)
    base = base_topic(site_id)
    out: dict[str, dict[str, object]] = {}
    for q in SENSORS:
        config: dict[str, object] = {
            "name": q.name,
            "unique_id": f"{node}_{q.key}",
            "object_id": f"{node}_{q.key}",
            "state_topic": f"{base}/state",
            "value_template": f"{{{{ value_json.{q.key} }}}}",
            "unit_of_measurement": q.unit,
            "device_class": q.device_class,
            "state_class": q.state_class,
            "suggested_display_precision": q.precision,
            "availability_topic": f"{base}/availability",
            "device": _gateway_device(site_id),
        }
        if q.icon is not None:
            config["icon"] = q.icon
        out[f"{prefix}/sensor/{node}/{q.key}/config"] = config
    for key, name, icon in BATTERY_ENERGY:
        out[f"{prefix}/sensor/{node}/{key}/config"] = {
            "name": name,
            "unique_id": f"{node}_{key}",
            "object_id": f"{node}_{key}",
            "state_topic": f"{base}/state",
            "value_template": f"{{{{ value_json.{key} }}}}",
            "unit_of_measurement": "kWh",
            "device_class": "energy",
            "state_class": "total_increasing",
            "suggested_display_precision": 2,
            "availability_topic": f"{base}/availability",
            "device": _gateway_device(site_id),
            "icon": icon,
        }
    return out


def control_discovery(
    site_id: str, prefix: str, entity: ControlEntity
) -> tuple[str, dict[str, object]]:
    """(topic, retained discovery config) of one control entity. An entity acting on a
    device belongs to an HA device of its own (via the gateway) and is available only while
    both the gateway and that device are."""
    node = _node(site_id)
    base = base_topic(site_id)
    unique = f"{node}_{entity.key.replace('-', '_')}"
    availability = [{"topic": f"{base}/availability"}]
    device: dict[str, object] = _gateway_device(site_id)
    if entity.device_id is not None:
        availability.append({"topic": device_availability_topic(site_id, entity.device_id)})
        device = {
            "identifiers": [f"{node}_{entity.device_id}"],
            "name": f"hems {entity.device_id}",
            "manufacturer": "hems",
            "via_device": node,
        }
    config: dict[str, object] = {
        "name": entity.name,
        "unique_id": unique,
        "object_id": unique,
        "availability": availability,
        "availability_mode": "all",
        "device": device,
    }
    if entity.stateful:
        config["state_topic"] = f"{base}/control/{entity.key}/state"
    if entity.commandable:
        config["command_topic"] = f"{base}/control/{entity.key}/set"
        config["retain"] = False  # see the module docstring: commands are never retained
    config.update(entity.fields)
    return f"{prefix}/{entity.component}/{node}/{entity.key}/config", config


def state_message(state: SiteState, battery: SplitEnergy | None = None) -> dict[str, float | None]:
    """The sensors' JSON: the site quantities, and the batteries' energy in and out (None
    without a battery)."""
    out = site_values(state)
    has_battery = Role.BATTERY in state.devices.values()
    for (key, _, _), wh in zip(
        BATTERY_ENERGY,
        (battery.positive_wh, battery.negative_wh) if battery else (0.0, 0.0),
        strict=True,
    ):
        out[key] = round(wh / 1000.0, 4) if has_battery and battery is not None else None
    return out


def tls_context(cfg: HomeAssistantConfig) -> ssl.SSLContext | None:
    """TLS to the local broker: its CA (else the system's), a client certificate if given."""
    tls = cfg.tls
    if tls is None:
        return None
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_path) if tls.ca_path else None
        )
        if tls.cert_path is not None and tls.key_path is not None:
            ctx.load_cert_chain(str(tls.cert_path), str(tls.key_path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("uplink.home_assistant.tls", f"cannot load certificates: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.insecure_skip_hostname_check:
        ctx.check_hostname = False
    return ctx


class HomeAssistantDiscovery:
    """The bridge: discovery, availability, states and (with a surface) commands."""

    def __init__(
        self,
        cfg: HomeAssistantConfig,
        site_id: str,
        state: SiteState,
        clock: Clock,
        surface: ControlSurface | None = None,
    ) -> None:
        self._cfg = cfg
        self._site_id = site_id
        self._state = state
        self._clock = clock
        self._surface = surface
        self._base = base_topic(site_id)
        self._tls = tls_context(cfg)
        # What the broker holds from this session: topic → payload, to publish changes only.
        self._sent: dict[str, str] = {}
        self._controls: dict[str, ControlEntity] = {}
        self._battery = SplitEnergy()
        state.add_listener(self._on_readings)
        self._lock = asyncio.Lock()  # both loops publish; one view of what was sent
        self.announced = 0  # times the full discovery was sent (tests wait on it)
        self.commands_handled = 0

    def _on_readings(self, batch: list[Reading]) -> None:
        roles = self._state.devices
        for r in batch:
            if r.quantity is Quantity.POWER_W and roles.get(r.device_id) is Role.BATTERY:
                self._battery.add(r.device_id, r.at, r.value)

    async def run(self) -> None:
        failing = False
        while True:
            raise_if_cancelling()
            try:
                await self._session()
            except* (aiomqtt.MqttError, OSError) as group:
                if not failing:
                    log.warning("home assistant broker unreachable", error=str(group.exceptions[0]))
                failing = True
            await self._clock.sleep(10.0)

    async def _session(self) -> None:
        password = self._cfg.password.get_secret_value() if self._cfg.password else None
        client = aiomqtt.Client(
            self._cfg.broker_host,
            self._cfg.broker_port,
            username=self._cfg.username,
            password=password,
            identifier=f"hems-ha-{self._site_id}",
            protocol=aiomqtt.ProtocolVersion.V5,  # for retain-as-published (Mosquitto >= 1.6)
            tls_context=self._tls,
            will=aiomqtt.Will(f"{self._base}/availability", "offline", qos=1, retain=True),
        )
        async with client:
            log.info(
                "home assistant connected",
                broker=self._cfg.broker_host,
                tls=self._tls is not None,
                controls=self._surface is not None,
            )
            self._sent.clear()
            await client.subscribe(f"{self._cfg.discovery_prefix}/status", qos=1)
            if self._surface is not None:
                # Retain-as-published: a retained command is recognised as such.
                await client.subscribe(
                    f"{self._base}/control/+/set",
                    options=SubscribeOptions(qos=1, retainAsPublished=True),
                )
            await self._announce(client)
            raise_if_cancelling()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish_loop(client))
                tg.create_task(self._receive_loop(client))

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Every discovery config, then availability and states, all sent again."""
        async with self._lock:
            await self._announce_locked(client)

    async def _announce_locked(self, client: aiomqtt.Client) -> None:
        self._sent.clear()
        for topic, config in discovery_messages(self._site_id, self._cfg.discovery_prefix).items():
            await self._put(client, topic, json.dumps(config))
        await self._put(client, f"{self._base}/availability", "online")
        await self._refresh_locked(client)
        await client.publish(
            f"{self._base}/state", json.dumps(state_message(self._state, self._battery)), qos=0
        )
        self.announced += 1

    async def _put(self, client: aiomqtt.Client, topic: str, payload: str) -> None:
        """Publish retained, unless the broker already holds exactly this."""
        if self._sent.get(topic) == payload:
            return
        await client.publish(topic, payload, qos=1, retain=True)
        self._sent[topic] = payload
        raise_if_cancelling()  # aiomqtt's wait_for may have swallowed a stop (hems.core.tasks)

    async def _refresh(self, client: aiomqtt.Client) -> None:
        """Device availability, control entities (added, removed) and their states."""
        async with self._lock:
            await self._refresh_locked(client)

    async def _refresh_locked(self, client: aiomqtt.Client) -> None:
        for device_id in self._state.devices:
            online = "offline" if self._state.is_stale(device_id) else "online"
            await self._put(client, device_availability_topic(self._site_id, device_id), online)
        if self._surface is None:
            return
        entities = {e.key: e for e in await self._surface.entities()}
        prefix = self._cfg.discovery_prefix
        for key, entity in self._controls.items():
            if key not in entities:  # gone: an empty retained config removes it from HA
                topic, _ = control_discovery(self._site_id, prefix, entity)
                await client.publish(topic, b"", qos=1, retain=True)
                self._sent.pop(topic, None)
        self._controls = entities
        for entity in entities.values():
            topic, config = control_discovery(self._site_id, prefix, entity)
            await self._put(client, topic, json.dumps(config))
        for key, value in (await self._surface.states()).items():
            if key in entities:
                await self._put(client, f"{self._base}/control/{key}/state", value)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        """Changes every second (a mode set on the page shows in HA within it); the site
        quantities every `state_interval_s`."""
        since_state_s = 0.0
        while True:
            raise_if_cancelling()
            await self._clock.sleep(1.0)
            await self._refresh(client)
            since_state_s += 1.0
            if since_state_s >= self._cfg.state_interval_s:
                since_state_s = 0.0
                await client.publish(
                    f"{self._base}/state",
                    json.dumps(state_message(self._state, self._battery)),
                    qos=0,
                )

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        status = f"{self._cfg.discovery_prefix}/status"
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic == status:
                if payload.strip() == b"online":
                    log.info("home assistant is online; discovery sent again")
                    await self._announce(client)
                raise_if_cancelling()
                continue
            if self._surface is None or not message.topic.matches(f"{self._base}/control/+/set"):
                continue
            key = topic.split("/")[-2]
            if message.retain:
                log.warning("home assistant command rejected", entity=key, field="retain",
                            reason="a retained command is never applied")  # fmt: skip
            else:
                await self._surface.command(key, payload)
            self.commands_handled += 1
            await self._refresh(client)
            raise_if_cancelling()


__all__ = [
    "SENSORS",
    "ControlEntity",
    "ControlSurface",
    "HomeAssistantDiscovery",
    "base_topic",
    "control_discovery",
    "device_availability_topic",
    "discovery_messages",
    "state_message",
    "tls_context",
]
