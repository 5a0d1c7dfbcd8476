"""Envelope signing and every rejection reason, as pure functions."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.errors import MessageRejected
from hems.uplink import envelope
from hems.uplink.messages import TYPES, uplink_json_schema

NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
EVENT = {
    "event_id": "dfs-42",
    "modification_number": 0,
    "kind": "turn_down",
    "start": "2026-11-27T17:30:00Z",
    "end": "2026-11-27T18:30:00Z",
    "import_cap_w": 500,
}


def signed(**overrides: object) -> dict:
    msg = envelope.build(
        KEY, type_="event", site_id="site-a", seq=10, payload=EVENT, now=NOW, ttl_s=600
    )
    msg.update(overrides)
    if overrides:
        msg["sig"] = envelope.b64url(KEY.sign(envelope.canonical(msg)))
    return msg


def check(msg: dict, *, now: datetime = NOW, last_seq: int = 9, seen: set[str] | None = None):
    return envelope.check(
        msg,
        key=KEY.public_key(),
        site_id="site-a",
        now=now,
        last_seq=last_seq,
        seen=lambda i: i in (seen or set()),
        max_skew_s=120,
    )


def reason(msg: dict, **kw: object) -> tuple[str, str]:
    with pytest.raises(MessageRejected) as info:
        check(msg, **kw)  # type: ignore[arg-type]
    return info.value.reason, info.value.detail  # type: ignore[attr-defined]


def test_uuid7_layout_and_order() -> None:
    a = envelope.uuid7(1_700_000_000_000)
    b = envelope.uuid7(1_700_000_000_001)
    u = uuid.UUID(a)
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert int(a.replace("-", "")[:12], 16) == 1_700_000_000_000
    assert a < b  # time-ordered
    fixed = envelope.uuid7(0x0123456789AB, bytes(10))
    assert fixed == "01234567-89ab-7000-8000-000000000000"


def test_signature_covers_canonical_json_and_verifies() -> None:
    msg = signed()
    body = {k: v for k, v in msg.items() if k != "sig"}
    KEY.public_key().verify(envelope.b64url_decode(msg["sig"]), rfc8785.dumps(body))
    assert "=" not in msg["sig"] and len(msg["sig"]) == 86
    # Key order and whitespace on the wire do not matter: the canonical form is signed.
    shuffled = json.loads(json.dumps(dict(reversed(list(msg.items()))), indent=2))
    checked = check(shuffled)
    assert checked.envelope.seq == 10
    assert checked.payload.event_id == "dfs-42"  # type: ignore[attr-defined]


def test_forged_signature_rejected() -> None:
    msg = signed()
    msg["payload"] = {**msg["payload"], "import_cap_w": 50}  # tampered after signing
    assert reason(msg)[0] == "bad_signature"
    other = Ed25519PrivateKey.generate()
    forged = signed()
    forged["sig"] = envelope.b64url(other.sign(envelope.canonical(forged)))
    assert reason(forged)[0] == "bad_signature"
    garbage = signed(sig="!!not base64!!")
    garbage["sig"] = "!!not base64!!"
    assert reason(garbage)[0] == "bad_signature"


def test_missing_signature_rejected() -> None:
    msg = signed()
    del msg["sig"]
    assert reason(msg) == ("missing_signature", "sig: is required")


def test_expired_rejected() -> None:
    msg = signed(expires_at="2026-11-27T16:59:59Z")
    assert reason(msg)[0] == "expired"


def test_clock_skew_rejected_beyond_120_s_either_way() -> None:
    assert check(signed(), now=NOW + timedelta(seconds=119)).envelope.id
    r, detail = reason(signed(), now=NOW + timedelta(seconds=121))
    assert r == "clock_skew" and "121 s" in detail
    ahead = signed(issued_at="2026-11-27T17:02:01Z")
    assert reason(ahead)[0] == "clock_skew"


def test_replayed_seq_rejected() -> None:
    assert reason(signed(), last_seq=10) == ("replayed_seq", "seq: 10 is not above 10")
    assert reason(signed(seq=3))[0] == "replayed_seq"


def test_duplicate_id_rejected() -> None:
    msg = signed()
    assert reason(msg, seen={msg["id"]})[0] == "duplicate_id"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("seq", "ten", "seq:"),
        ("issued_at", "yesterday", "issued_at:"),
        ("v", 2, "v:"),
        ("id", "not-a-uuid", "id:"),
    ],
)
def test_malformed_envelope_names_the_field(field: str, value: object, named: str) -> None:
    r, detail = reason(signed(**{field: value}))
    assert r == "malformed" and detail.startswith(named), detail


def test_malformed_payload_names_the_field() -> None:
    bad = copy.deepcopy(EVENT)
    bad["import_cap_w"] = -5
    r, detail = reason(signed(payload=bad))
    assert r == "malformed" and detail.startswith("payload.import_cap_w:"), detail
    no_instruction = {k: v for k, v in EVENT.items() if k != "import_cap_w"}
    r, detail = reason(signed(payload=no_instruction))
    assert r == "malformed" and "import_cap_w" in detail
    assert reason(signed(payload={**EVENT, "surprise": 1}))[1].startswith("payload.surprise")


def test_not_json_and_wrong_site() -> None:
    with pytest.raises(MessageRejected) as info:
        envelope.parse(b"{nope")
    assert info.value.reason == "malformed"
    assert reason(signed(site_id="site-b"))[0] == "wrong_site"


def test_public_key_formats() -> None:
    pub = KEY.public_key()
    text = envelope.public_key_text(pub)
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    for form in (text, pem):
        assert envelope.public_key_text(envelope.load_public_key(form)) == text
    with pytest.raises(ValueError, match="32 bytes"):
        envelope.load_public_key(text[:20])


def test_schema_covers_every_type_and_is_versioned() -> None:
    schema = uplink_json_schema()
    assert schema["version"] == 1
    assert set(schema["types"]) == set(TYPES)
    assert "Envelope" in schema["$defs"] and "Event" in schema["$defs"]
    for spec in schema["types"].values():
        assert spec["payload"]["$ref"].removeprefix("#/$defs/") in schema["$defs"]
    assert schema["types"]["telemetry"]["droppable"] is True
    assert schema["types"]["delivery_report"]["droppable"] is False
    json.dumps(schema)
