"""Wire models of the aggregator channel, version 1.

Every message is an `Envelope` whose `payload` is one of the models below, chosen by `type`.
The JSON Schema of all of them is `uplink_json_schema()` (`hems schema uplink`).
Bump `PROTOCOL_VERSION` on any incompatible change; receivers reject other versions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

PROTOCOL_VERSION = 1


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    # Reports and offers carry evidence that the flex area may extend; known fields are checked.
    model_config = ConfigDict(extra="allow", frozen=True)


# -- envelope --------------------------------------------------------------------------------


class Envelope(_Wire):
    v: Literal[1] = Field(description="protocol version")
    id: str = Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        description="UUIDv7 (RFC 9562), unique per message",
    )
    type: str = Field(description="payload type, see TYPES")
    site_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    seq: int = Field(
        ge=0,
        description="sender's sequence number; 0 = unsequenced (status, ack), else strictly "
        "increasing per sender and site",
    )
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    payload: dict[str, Any]
    sig: str = Field(
        pattern=r"^[A-Za-z0-9_-]{86}$",
        description="Ed25519 over RFC 8785 canonical JSON of the message without sig, "
        "base64url without padding",
    )


# -- payloads --------------------------------------------------------------------------------


class Status(_Wire):
    """up/status, retained; the Last Will carries state offline."""

    state: Literal["online", "offline"]
    software_version: str | None = None


class Asset(_Wire):
    asset_id: str
    role: Literal["grid", "pv", "battery", "ev", "load"]
    control: Literal["none", "power_setpoint", "current_limit", "on_off", "curtail_pct"]
    min_power_w: float | None = Field(default=None, description="+ = consuming/charging")
    max_power_w: float | None = None
    energy_capacity_wh: float | None = Field(default=None, ge=0)


class Capabilities(_Wire):
    """up/capabilities: what each controllable asset can do."""

    assets: list[Asset]
    import_limit_w: float | None = Field(default=None, ge=0)
    export_limit_w: float | None = Field(default=None, ge=0)


class Telemetry(_Wire):
    """up/telemetry, every 10–60 s. All W; null = unknown or stale (never 0 for missing)."""

    at: AwareDatetime
    grid_w: float | None = Field(description="+ = import, - = export")
    pv_w: float | None = Field(description="+ = producing")
    battery_w: float | None = Field(description="+ = charging, - = discharging")
    soc_pct: float | None = Field(ge=0, le=100)
    ev_w: float | None = Field(description="+ = charging")


class MeterInterval(_Wire):
    """up/meter/interval: one settlement period of the billing meter."""

    period_start: AwareDatetime
    period_end: AwareDatetime
    import_kwh: float | None = Field(ge=0)
    export_kwh: float | None = Field(ge=0)
    quality: Literal["measured", "estimated", "missing"]

    @model_validator(mode="after")
    def _ordered(self) -> MeterInterval:
        if self.period_end <= self.period_start:
            raise ValueError("period_end: must be after period_start")
        return self


class OfferPeriod(_Open):
    period_start: AwareDatetime
    period_end: AwareDatetime
    turn_down_w: float = Field(ge=0, description="how much import could be reduced")
    turn_up_w: float = Field(ge=0, description="how much import could be increased")
    turn_down_cost: float | None = Field(default=None, description="currency per kWh")
    turn_up_cost: float | None = None


class FlexOffer(_Open):
    """up/flex/offer: per upcoming settlement period."""

    offer_id: str
    currency: str = "GBP"
    periods: list[OfferPeriod]


class Event(_Wire):
    """down/event: a flexibility event for a window.

    Identified by (event_id, modification_number); a higher modification replaces a lower one.
    At least one instruction is set. All W at the connection point, + = import.
    """

    event_id: str = Field(min_length=1, max_length=128)
    modification_number: int = Field(ge=0)
    kind: Literal["turn_down", "turn_up"]
    start: AwareDatetime
    end: AwareDatetime
    cancelled: bool = False
    import_cap_w: float | None = Field(default=None, ge=0)
    export_floor_w: float | None = Field(default=None, ge=0, description="export at least")
    setpoint_w: float | None = Field(default=None, description="grid setpoint, + = import")
    price_per_kwh: float | None = None
    currency: str | None = None

    @model_validator(mode="after")
    def _sane(self) -> Event:
        if self.end <= self.start:
            raise ValueError("end: must be after start")
        instructions = (self.import_cap_w, self.export_floor_w, self.setpoint_w)
        if (
            not self.cancelled
            and all(x is None for x in instructions)
            and self.price_per_kwh is None
        ):
            raise ValueError("needs one of import_cap_w, export_floor_w, setpoint_w, price_per_kwh")
        return self


class EventDecision(_Wire):
    """What the flex policy decided; the gateway sends it as an EventResponse.

    "outdated": the modification is not above the one the policy stored
    (`stored_modification`); the gateway rejects the event as outdated_modification.
    """

    status: Literal["accepted", "opted_out", "outdated"]
    reason: str | None = None
    clamped: dict[str, float] | None = Field(
        default=None, description="instructions clamped to the home's safety limits"
    )
    stored_modification: int | None = None


RejectReason = Literal[
    "bad_signature",
    "missing_signature",
    "expired",
    "clock_skew",
    "replayed_seq",
    "duplicate_id",
    "malformed",
    "wrong_site",
    "outdated_modification",
    "unsupported_type",
]


class EventResponse(_Wire):
    """up/event/response: the answer to a down/event, or a rejection of any down message."""

    ref_id: str | None = Field(description="id of the message answered (null if unreadable)")
    ref_type: str | None = None
    event_id: str | None = None
    modification_number: int | None = None
    status: Literal["accepted", "opted_out", "rejected"]
    reason: RejectReason | None = None
    detail: str | None = Field(default=None, description="e.g. the field that was malformed")
    clamped: dict[str, float] | None = None


class EnvelopeInterval(_Wire):
    start: AwareDatetime
    end: AwareDatetime
    import_limit_w: float | None = Field(default=None, ge=0)
    export_limit_w: float | None = Field(default=None, ge=0)


class OperatingEnvelope(_Wire):
    """down/envelope: import/export limits per interval plus a default."""

    default_import_limit_w: float | None = Field(default=None, ge=0)
    default_export_limit_w: float | None = Field(default=None, ge=0)
    intervals: list[EnvelopeInterval] = Field(default_factory=list)


class DeliveryPeriod(_Open):
    period_start: AwareDatetime
    period_end: AwareDatetime
    unadjusted_baseline_kwh: float | None
    adjustment_kwh: float | None
    baseline_kwh: float | None
    metered_kwh: float | None
    delivered_kwh: float | None


class DeliveryReport(_Open):
    """up/report/delivery: after an event, what was delivered, with its evidence."""

    event_id: str
    modification_number: int = Field(ge=0)
    method: str
    method_version: str
    periods: list[DeliveryPeriod]
    days_used: list[str] = Field(default_factory=list)
    days_excluded: list[str] = Field(default_factory=list)
    meter_data_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Ack(_Wire):
    """down/ack and up/ack: the receiver has durably handled these seqs (inclusive ranges)."""

    ranges: list[tuple[int, int]] = Field(description="[[first_seq, last_seq], …]")

    @model_validator(mode="after")
    def _ordered(self) -> Ack:
        for lo, hi in self.ranges:
            if lo < 1 or hi < lo:
                raise ValueError("ranges: each must be [first, last] with 1 <= first <= last")
        return self

    def covers(self, seq: int) -> bool:
        return any(lo <= seq <= hi for lo, hi in self.ranges)


# -- the catalogue ---------------------------------------------------------------------------

# type -> (payload model, topic suffix, direction, outbox kind or None if not outboxed)
TYPES: dict[str, tuple[type[BaseModel], str, Literal["up", "down"], str | None]] = {
    "status": (Status, "up/status", "up", None),
    "capabilities": (Capabilities, "up/capabilities", "up", "capabilities"),
    "telemetry": (Telemetry, "up/telemetry", "up", "telemetry"),
    "meter_interval": (MeterInterval, "up/meter/interval", "up", "interval"),
    "flex_offer": (FlexOffer, "up/flex/offer", "up", "offer"),
    "event_response": (EventResponse, "up/event/response", "up", "response"),
    "delivery_report": (DeliveryReport, "up/report/delivery", "up", "report"),
    "up_ack": (Ack, "up/ack", "up", None),
    "event": (Event, "down/event", "down", None),
    "envelope": (OperatingEnvelope, "down/envelope", "down", None),
    "ack": (Ack, "down/ack", "down", None),
}
DROPPABLE_KINDS = frozenset({"telemetry", "capabilities", "offer", "rejection"})
UNSEQUENCED_TYPES = frozenset({"status", "up_ack", "ack"})


def topic_for(prefix: str, type_: str) -> str:
    return prefix + TYPES[type_][1]


def type_for_topic(prefix: str, topic: str) -> str | None:
    if not topic.startswith(prefix):
        return None
    suffix = topic[len(prefix) :]
    for name, (_, sfx, _, _) in TYPES.items():
        if sfx == suffix:
            return name
    return None


def uplink_json_schema() -> dict[str, Any]:
    """JSON Schema of the envelope and every payload type (`hems schema uplink`)."""
    defs: dict[str, Any] = {}
    types: dict[str, Any] = {}
    for name, (model, suffix, direction, kind) in TYPES.items():
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
        types[name] = {
            "topic": "hems/v1/{site_id}/" + suffix,
            "direction": direction,
            "outbox": kind is not None,
            "droppable": kind in DROPPABLE_KINDS,
            "sequenced": name not in UNSEQUENCED_TYPES,
            "payload": {"$ref": f"#/$defs/{model.__name__}"},
        }
    env = Envelope.model_json_schema(ref_template="#/$defs/{model}")
    defs.update(env.pop("$defs", {}))
    defs["Envelope"] = env
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://hems.invalid/schema/uplink/v{PROTOCOL_VERSION}",
        "title": f"hems uplink protocol v{PROTOCOL_VERSION}",
        "version": PROTOCOL_VERSION,
        "envelope": {"$ref": "#/$defs/Envelope"},
        "types": types,
        "$defs": defs,
    }
