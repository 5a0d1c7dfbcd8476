"""The aggregator channel: signed envelopes over MQTT 5 with a durable outbox.

See README.md in this folder for the protocol. One job per module:

- `channel`: `Uplink`, the MQTT session (persistent, reconnecting), publishing the outbox in
  seq order, telemetry, and storing/sending the answers `Inbound` gives it.
- `inbound`: `Inbound`, every downlink from bytes to a verified, typed message handed to its
  handler (event, operating envelope, ack), with the `Response` (answer or rejection) to
  send; owns the received ids (`uplink_seen`) and the last accepted aggregator seq.
- `envelope`: pure signing and checking of one message (Ed25519 over RFC 8785 JSON).
- `outbox`: the durable SQLite outbox and the channel's seq counters.
- `messages`: the wire models of protocol v1 and their topics (`uplink_json_schema`).
- `capabilities`: `describe_site`, what the site can do, from roles and device ratings.
- `keys`: the gateway's own Ed25519 key, created on first use.
- `config`: `UplinkConfig`, the `uplink:` section.
- `homeassistant`: MQTT discovery for a local Home Assistant (no aggregator needed).
- `schema`: `hems schema uplink`.

Names are imported lazily: loading the config (which needs only `hems.uplink.config`) must
not pull in cryptography, aiomqtt and paho for a site without an uplink.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hems.uplink.capabilities import describe_site
    from hems.uplink.channel import Uplink
    from hems.uplink.config import UplinkConfig
    from hems.uplink.inbound import Inbound, Response
    from hems.uplink.messages import (
        Capabilities,
        Event,
        EventDecision,
        OperatingEnvelope,
        uplink_json_schema,
    )

_HOMES = {
    "Capabilities": "hems.uplink.messages",
    "Event": "hems.uplink.messages",
    "EventDecision": "hems.uplink.messages",
    "Inbound": "hems.uplink.inbound",
    "OperatingEnvelope": "hems.uplink.messages",
    "Response": "hems.uplink.inbound",
    "Uplink": "hems.uplink.channel",
    "UplinkConfig": "hems.uplink.config",
    "describe_site": "hems.uplink.capabilities",
    "uplink_json_schema": "hems.uplink.messages",
}
__all__ = [
    "Capabilities",
    "Event",
    "EventDecision",
    "Inbound",
    "OperatingEnvelope",
    "Response",
    "Uplink",
    "UplinkConfig",
    "describe_site",
    "uplink_json_schema",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hems.uplink' has no attribute {name!r}")
    return getattr(import_module(home), name)
