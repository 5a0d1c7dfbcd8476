"""The aggregator channel: signed envelopes over MQTT 5 with a durable outbox.

Entry class: `Uplink`; see README.md in this folder for the protocol.
"""

from hems.uplink.channel import Uplink
from hems.uplink.config import UplinkConfig
from hems.uplink.messages import Event, EventDecision, OperatingEnvelope, uplink_json_schema

__all__ = [
    "Event",
    "EventDecision",
    "OperatingEnvelope",
    "Uplink",
    "UplinkConfig",
    "uplink_json_schema",
]
