"""GB Consumer Access Device: Hildebrand Glow (CAD or IHD) publishing its local-MQTT JSON.

Topic `glow/<cad id>/SENSOR/electricitymeter`, roughly every 10 s:
`{"electricitymeter": {"timestamp", "energy": {"import": {"cumulative": kWh, …},
"export": {"cumulative": kWh}}, "power": {"value": kW}}}`.

`parse_glow` is pure and rejects, with a one-line reason: non-JSON, missing fields, wrong
units, non-finite numbers, negative or absurd cumulative registers, and the meter's error
value for instantaneous demand. ZigBee Smart Energy carries InstantaneousDemand as a signed
24-bit integer in W, whose "invalid" value 0x800000 arrives as -8388.608 kW; any |power|
above 1 MW is treated the same way.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog

from hems.core.clock import Clock
from hems.core.jsonsafe import loads_bounded
from hems.core.readings import Quantity, Reading
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.devices.health import PushHealth
from hems.devices.meters.config import GlowMeterConfig
from hems.errors import HemsError

log = structlog.get_logger(__name__)

GLOW_POWER_ERROR_KW = -8388.608  # int24 0x800000 W, "invalid" in ZigBee SE metering
MAX_POWER_KW = 1000.0
MAX_CUMULATIVE_KWH = 1e9


class GlowError(HemsError):
    """A Glow payload that must not be used, with the reason."""


@dataclass(frozen=True, slots=True)
class GlowSample:
    power_w: float  # + import
    import_wh: float
    export_wh: float
    meter_timestamp: str


def _number(data: Any, path: str) -> float:
    node = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise GlowError(f"electricitymeter.{path}: missing")
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise GlowError(f"electricitymeter.{path}: not a number ({node!r})")
    value = float(node)
    if not math.isfinite(value):
        raise GlowError(f"electricitymeter.{path}: not finite")
    return value


def _units(data: dict[str, Any], path: str, expected: str) -> None:
    node: Any = data
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if node is not None and str(node) != expected:
        raise GlowError(f"electricitymeter.{path}: unit {node!r}, expected {expected!r}")


MAX_PAYLOAD_BYTES = 16 * 1024


def parse_glow(payload: bytes | str) -> GlowSample:
    """One `SENSOR/electricitymeter` payload to a sample. Raises GlowError."""
    raw = payload.encode() if isinstance(payload, str) else payload
    try:
        # A real payload is ~1 KiB and 4 levels deep: anything far beyond is refused unparsed.
        doc = loads_bounded(raw, max_bytes=MAX_PAYLOAD_BYTES, max_depth=8, what="payload")
    except ValueError as exc:
        raise GlowError(str(exc)) from None
    meter = doc.get("electricitymeter") if isinstance(doc, dict) else None
    if not isinstance(meter, dict):
        raise GlowError("no 'electricitymeter' object")
    _units(meter, "energy.import.units", "kWh")
    _units(meter, "energy.export.units", "kWh")
    _units(meter, "power.units", "kW")
    power_kw = _number(meter, "power.value")
    if power_kw == GLOW_POWER_ERROR_KW or abs(power_kw) > MAX_POWER_KW:
        raise GlowError(f"electricitymeter.power.value: meter error value ({power_kw} kW)")
    imp = _number(meter, "energy.import.cumulative")
    exp = _number(meter, "energy.export.cumulative")
    for name, value in (("import", imp), ("export", exp)):
        if not 0 <= value < MAX_CUMULATIVE_KWH:
            raise GlowError(f"electricitymeter.energy.{name}.cumulative: {value} kWh impossible")
    return GlowSample(
        power_w=round(power_kw * 1000, 3),
        import_wh=round(imp * 1000, 3),
        export_wh=round(exp * 1000, 3),
        meter_timestamp=str(meter.get("timestamp", "")),
    )


class GlowMeter:
    """Subscribes to a Glow CAD's electricity topic until cancelled; reconnects with backoff."""

    def __init__(self, cfg: GlowMeterConfig, state: SiteState, clock: Clock) -> None:
        self.cfg = cfg
        self.device_id = cfg.id
        self._state = state
        self._clock = clock
        self.health = PushHealth(cfg.id, state, "glow", "payload")
        state.register_device(cfg.id, cfg.role, stale_after_s=cfg.stale_after_s)

    @property
    def payloads_ok(self) -> int:
        return self.health.accepted

    @property
    def payloads_rejected(self) -> int:
        return self.health.rejected

    @property
    def last_error(self) -> str | None:
        return self.health.last_error

    async def run(self) -> None:
        backoff_s = 1.0
        client = aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username,
            password=self.cfg.password.get_secret_value() if self.cfg.password else None,
            identifier=f"hems-{self.device_id}",
        )
        while True:
            raise_if_cancelling()
            try:
                async with client:
                    await client.subscribe(self.cfg.topic, qos=0)
                    log.info("glow subscribed", device=self.device_id, topic=self.cfg.topic)
                    backoff_s = 1.0
                    async for message in client.messages:
                        raise_if_cancelling()
                        self.handle(message.payload)
            except Exception as exc:  # MqttError or a socket error: reconnect, never crash
                self.health.link_down(f"MQTT: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0)  # let cancellation in before the backoff
            await self._clock.sleep(backoff_s)
            backoff_s = min(self.cfg.reconnect_max_s, backoff_s * 2)

    def handle(self, payload: Any) -> bool:
        """Parse one payload and publish it; a bad one is counted and dropped."""
        try:
            if not isinstance(payload, bytes | str):
                raise GlowError(f"payload of type {type(payload).__name__}")
            sample = parse_glow(payload)
        except GlowError as exc:
            self.health.input_rejected(str(exc))
            return False
        at = self._clock.now()
        d = self.device_id
        self._state.publish(
            [
                Reading(d, Quantity.POWER_W, sample.power_w, at),
                Reading(d, Quantity.ENERGY_IMPORT_WH, sample.import_wh, at),
                Reading(d, Quantity.ENERGY_EXPORT_WH, sample.export_wh, at),
            ]
        )
        self.health.input_accepted()
        return True
