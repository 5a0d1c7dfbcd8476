"""Home Assistant MQTT discovery for the site quantities, on a local broker (optional).

One sensor per row of hems.core.quantities.SITE_QUANTITIES (a new figure there is a new
sensor here), with its unit, device class and state class, so the energy counters can feed
HA's Energy dashboard. Discovery configs and the availability topic are retained; the state
is one JSON object read by value templates (null renders as None, which HA takes as unknown).
"""

from __future__ import annotations

import json

import aiomqtt
import structlog

from hems.core.clock import Clock
from hems.core.quantities import SITE_QUANTITIES, SiteQuantity, site_values
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.uplink.config import HomeAssistantConfig

log = structlog.get_logger(__name__)


SENSORS: tuple[SiteQuantity, ...] = SITE_QUANTITIES  # one sensor per site quantity


def _base_topic(site_id: str) -> str:
    return f"hems/{site_id}/ha"


def discovery_messages(site_id: str, prefix: str) -> dict[str, dict[str, object]]:
    """topic -> retained discovery config, for every sensor."""
    node = f"hems_{site_id}"
    base = _base_topic(site_id)
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
            "device": {"identifiers": [node], "name": f"hems {site_id}", "manufacturer": "hems"},
        }
        if q.icon is not None:
            config["icon"] = q.icon
        out[f"{prefix}/sensor/{node}/{q.key}/config"] = config
    return out


def state_message(state: SiteState) -> dict[str, float | None]:
    return site_values(state)


class HomeAssistantDiscovery:
    def __init__(
        self, cfg: HomeAssistantConfig, site_id: str, state: SiteState, clock: Clock
    ) -> None:
        self._cfg = cfg
        self._site_id = site_id
        self._state = state
        self._clock = clock
        self._base = _base_topic(site_id)

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
            will=aiomqtt.Will(f"{self._base}/availability", "offline", qos=1, retain=True),
        )
        async with client:
            log.info("home assistant discovery connected", broker=self._cfg.broker_host)
            for topic, config in discovery_messages(
                self._site_id, self._cfg.discovery_prefix
            ).items():
                await client.publish(topic, json.dumps(config), qos=1, retain=True)
            await client.publish(f"{self._base}/availability", "online", qos=1, retain=True)
            while True:
                await client.publish(
                    f"{self._base}/state", json.dumps(state_message(self._state)), qos=0
                )
                await self._clock.sleep(self._cfg.state_interval_s)


__all__ = ["SENSORS", "HomeAssistantDiscovery", "discovery_messages", "state_message"]
