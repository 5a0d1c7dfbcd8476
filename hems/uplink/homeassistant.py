"""Home Assistant MQTT discovery for the main sensors, on a local broker (optional).

Sensors are rows of a table; a new sensor is a new row. Discovery configs and the
availability topic are retained; the state is one JSON object read by value templates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import structlog

from hems.core.clock import Clock
from hems.core.readings import Role
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.uplink.channel import mean_soc_pct
from hems.uplink.config import HomeAssistantConfig

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorDescription:
    key: str
    name: str
    unit: str
    device_class: str
    value_fn: Callable[[SiteState], float | None]


SENSORS = (
    SensorDescription(
        key="grid_power_w",
        name="Grid power",
        unit="W",
        device_class="power",
        value_fn=lambda s: s.role_total(Role.GRID),
    ),
    SensorDescription(
        key="pv_power_w",
        name="PV power",
        unit="W",
        device_class="power",
        value_fn=lambda s: s.role_total(Role.PV),
    ),
    SensorDescription(
        key="battery_power_w",
        name="Battery power",
        unit="W",
        device_class="power",
        value_fn=lambda s: s.role_total(Role.BATTERY),
    ),
    SensorDescription(
        key="battery_soc_pct",
        name="Battery state of charge",
        unit="%",
        device_class="battery",
        value_fn=mean_soc_pct,
    ),
    SensorDescription(
        key="ev_power_w",
        name="EV charging power",
        unit="W",
        device_class="power",
        value_fn=lambda s: s.role_total(Role.EV),
    ),
)


def _base_topic(site_id: str) -> str:
    return f"hems/{site_id}/ha"


def discovery_messages(site_id: str, prefix: str) -> dict[str, dict[str, object]]:
    """topic -> retained discovery config, for every sensor."""
    node = f"hems_{site_id}"
    base = _base_topic(site_id)
    out: dict[str, dict[str, object]] = {}
    for s in SENSORS:
        out[f"{prefix}/sensor/{node}/{s.key}/config"] = {
            "name": s.name,
            "unique_id": f"{node}_{s.key}",
            "object_id": f"{node}_{s.key}",
            "state_topic": f"{base}/state",
            "value_template": f"{{{{ value_json.{s.key} }}}}",
            "unit_of_measurement": s.unit,
            "device_class": s.device_class,
            "state_class": "measurement",
            "availability_topic": f"{base}/availability",
            "device": {"identifiers": [node], "name": f"hems {site_id}", "manufacturer": "hems"},
        }
    return out


def state_message(state: SiteState) -> dict[str, float | None]:
    return {s.key: s.value_fn(state) for s in SENSORS}


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
