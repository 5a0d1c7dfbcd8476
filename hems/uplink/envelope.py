"""Signed envelopes: build, sign, verify and check. Pure: no I/O, time is passed in.

sig = Ed25519 over the RFC 8785 (JCS) canonical JSON of the message without `sig`,
base64url without padding. Receivers check in this order: JSON, signature present,
signature valid, envelope schema, payload schema, site, duplicate id, seq, expiry, clock skew.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ValidationError

from hems.core.jsonsafe import loads_bounded
from hems.errors import MessageRejected
from hems.uplink.messages import PROTOCOL_VERSION, TYPES, UNSEQUENCED_TYPES, Envelope


def uuid7(unix_ms: int, rand: bytes | None = None) -> str:
    """A UUID version 7 (RFC 9562 §5.7): 48-bit Unix ms, version, 12+62 random bits."""
    r = int.from_bytes(rand if rand is not None else os.urandom(10), "big")
    value = (unix_ms & (2**48 - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((r >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= r & (2**62 - 1)  # rand_b
    return str(uuid.UUID(int=value))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(message: dict[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of the message without its signature."""
    return rfc8785.dumps({k: v for k, v in message.items() if k != "sig"})


def public_key_text(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as base64url: what `hems keys show` prints."""
    return b64url(key.public_bytes_raw())


def load_public_key(text: str) -> Ed25519PublicKey:
    """Parse an Ed25519 public key given as base64url (32 raw bytes) or PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        # Only here: the serialization package loads every algorithm's module (RSA, DSA, EC,
        # DH, ciphers, SSH keys; 21 modules, 0.7 MiB), a daemon given a raw key needs none.
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise ValueError(f"not a readable PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("PEM key is not Ed25519")
        return key
    try:
        raw = b64url_decode(text)
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if len(raw) != 32:
        raise ValueError(f"must be 32 bytes of Ed25519 key, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def iso(t: datetime) -> str:
    """UTC with millisecond precision and a `Z`, as every timestamp on the wire."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build(
    key: Ed25519PrivateKey,
    *,
    type_: str,
    site_id: str,
    seq: int,
    payload: dict[str, Any] | BaseModel,
    now: datetime,
    ttl_s: float,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A signed message. The payload is validated against its model and serialised."""
    model = TYPES[type_][0]
    data = payload if isinstance(payload, BaseModel) else model.model_validate(payload)
    utc = now.astimezone(UTC)
    message: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "id": message_id or uuid7(int(now.timestamp() * 1000)),
        "type": type_,
        "site_id": site_id,
        "seq": seq,
        "issued_at": iso(utc),
        "expires_at": iso(utc + timedelta(seconds=ttl_s)),
        "payload": data.model_dump(mode="json", exclude_none=False),
    }
    message["sig"] = b64url(key.sign(canonical(message)))
    return message


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Checked:
    envelope: Envelope
    payload: BaseModel
    raw: dict[str, Any]


def field_error(exc: ValidationError, prefix: str) -> str:
    """`prefix` + the first error's field path and reason, on one line."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{prefix}{loc}: {msg}"


# A message id we echo back or look up: anything else (a lone surrogate, 1 MB of text) is
# never bound into SQLite or put in an answer.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_MESSAGE_BYTES = 256 * 1024
MAX_DEPTH = 32


def safe_id(value: Any) -> str | None:
    """`value` if it is a plausible message id (ASCII, <= 128 characters), else None."""
    return value if isinstance(value, str) and _SAFE_ID.match(value) else None


def reject(reason: str, detail: str, message: dict[str, Any] | None = None) -> MessageRejected:
    ref = message.get("id") if isinstance(message, dict) else None
    exc = MessageRejected(reason, safe_id(ref))
    exc.detail = detail  # type: ignore[attr-defined]
    exc.message = message  # type: ignore[attr-defined]
    return exc


def parse(raw: bytes) -> dict[str, Any]:
    """One received message as a dict; size and nesting are checked before parsing."""
    try:
        message = loads_bounded(
            raw, max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_DEPTH, what="message"
        )
    except ValueError as exc:
        raise reject("malformed", str(exc)) from None
    if not isinstance(message, dict):
        raise reject("malformed", "message: must be a JSON object")
    return message


def verify_signature(message: dict[str, Any], key: Ed25519PublicKey) -> None:
    sig = message.get("sig")
    if sig is None or sig == "":
        raise reject("missing_signature", "sig: is required", message)
    if not isinstance(sig, str):
        raise reject("bad_signature", "sig: must be a base64url string", message)
    try:
        data = canonical(message)
    except (rfc8785.CanonicalizationError, UnicodeError, ValueError, RecursionError) as exc:
        # e.g. integers beyond 2**53, a lone surrogate in a string
        raise reject("malformed", f"not canonicalisable: {exc}", message) from None
    try:
        key.verify(b64url_decode(sig), data)
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        raise reject(
            "bad_signature", "sig: does not verify with the configured key", message
        ) from None


def check(
    message: dict[str, Any],
    *,
    key: Ed25519PublicKey,
    site_id: str,
    now: datetime,
    last_seq: int,
    seen: Callable[[str], bool],
    max_skew_s: float,
    expected_type: str | None = None,
    check_skew: bool = True,
    check_expiry: bool = True,
) -> Checked:
    """Verify one received message; raise MessageRejected(reason) with a `detail`."""
    verify_signature(message, key)
    try:
        env = Envelope.model_validate(message)
    except ValidationError as exc:
        raise reject("malformed", field_error(exc, ""), message) from None
    if env.type not in TYPES:
        raise reject("unsupported_type", f"type: unknown {env.type!r}", message)
    if expected_type is not None and env.type != expected_type:
        raise reject("malformed", f"type: {env.type!r} does not belong on this topic", message)
    try:
        payload = TYPES[env.type][0].model_validate(env.payload)
    except ValidationError as exc:
        raise reject("malformed", field_error(exc, "payload."), message) from None
    if env.site_id != site_id:
        raise reject("wrong_site", f"site_id: {env.site_id!r} is not {site_id!r}", message)
    if seen(env.id):
        raise reject("duplicate_id", f"id: {env.id} was already received", message)
    sequenced = env.type not in UNSEQUENCED_TYPES
    if sequenced and env.seq <= last_seq:
        raise reject("replayed_seq", f"seq: {env.seq} is not above {last_seq}", message)
    if not sequenced and env.seq != 0:
        raise reject("malformed", f"seq: must be 0 for {env.type}", message)
    if check_expiry and env.expires_at <= now:
        raise reject("expired", f"expires_at: {env.expires_at.isoformat()} has passed", message)
    skew_s = abs((env.issued_at - now).total_seconds())
    if check_skew and skew_s > max_skew_s:
        raise reject(
            "clock_skew",
            f"issued_at: {skew_s:.0f} s from local time (max {max_skew_s:.0f})",
            message,
        )
    return Checked(env, payload, message)
