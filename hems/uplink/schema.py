"""`hems schema uplink`: the JSON Schema of every uplink message type and the envelope."""

from hems.uplink.messages import uplink_json_schema

__all__ = ["uplink_json_schema"]
