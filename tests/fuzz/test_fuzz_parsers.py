"""Every parser of outside input raises only its documented error, whatever the bytes.

Targets: the DSMR P1 and Glow parsers, SunSpec model decoding, OCPP frames, aggregator
envelopes (parse and full check), web/JSON bodies and the config loader.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from hems.config import ConfigErrors, validate
from hems.core.jsonsafe import loads_bounded
from hems.devices.meters.glow import GlowError, parse_glow
from hems.devices.meters.p1 import P1Error, parse_telegram
from hems.devices.modbus.sunspec import decode_model
from hems.devices.ocpp.rpc import FrameError, parse_frame
from hems.errors import BadValue, MessageRejected
from hems.uplink import envelope
from hil.p1_server import P1Values, build_telegram
from tests.fuzz.conftest import FUZZ

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
_KEY = Ed25519PrivateKey.generate()
_TELEGRAM = build_telegram(P1Values(datetime(2026, 1, 5, 9, tzinfo=UTC), 850.0, 1_000_500, 2_000))


def _mutate(text: str, data: st.DataObject) -> str:
    """The real telegram with a few characters replaced, inserted or cut."""
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(chars)))
        op = data.draw(st.sampled_from(["replace", "insert", "cut"]))
        c = data.draw(st.characters(codec="latin-1"))
        if op == "insert" or not chars:
            chars.insert(i, c)
        elif op == "replace":
            chars[min(i, len(chars) - 1)] = c
        else:
            del chars[min(i, len(chars) - 1)]
    return "".join(chars)


@FUZZ
@given(st.data())
def test_p1_telegrams(data: st.DataObject) -> None:
    text = data.draw(st.one_of(st.text(max_size=300), st.just(_TELEGRAM).map(lambda t: t)))
    if data.draw(st.booleans()):
        text = _mutate(_TELEGRAM, data)
    try:
        parse_telegram(text, "5")
    except P1Error:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode())))
def test_glow_payloads(raw: bytes) -> None:
    try:
        parse_glow(raw)
    except GlowError:
        pass


@FUZZ
@given(
    st.sampled_from([1, 101, 103, 111, 112, 113, 120, 124, 160, 203, 704, 705, 802, 64999]),
    st.lists(st.integers(0, 0xFFFF), max_size=160),
)
def test_sunspec_model_blocks(model_id: int, body: list[int]) -> None:
    try:
        decode_model(model_id, 40002, [model_id, len(body), *body])
    except BadValue:
        pass


@FUZZ
@given(
    st.sampled_from(["1.6", "2.0.1"]),
    st.one_of(
        st.binary(max_size=200),
        _JSON.map(json.dumps),
        st.tuples(st.sampled_from([2, 3, 4, 5]), st.text(max_size=40), _JSON, _JSON).map(
            lambda t: json.dumps(list(t))
        ),
    ),
)
def test_ocpp_frames(version: str, raw: str | bytes) -> None:
    try:
        parse_frame(raw, version)
    except FrameError:
        pass


def _parse_and_check(raw: bytes) -> None:
    """Everything the channel does to a received message before any handler; only
    MessageRejected may escape."""
    try:
        envelope.check(
            envelope.parse(raw),
            key=_KEY.public_key(),
            site_id="site-a",
            now=datetime(2026, 12, 7, tzinfo=UTC),
            last_seq=0,
            seen=lambda _id: False,
            max_skew_s=60,
        )
    except MessageRejected:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=300), _JSON.map(lambda v: json.dumps(v).encode())))
def test_envelope_parse_and_check(raw: bytes) -> None:
    _parse_and_check(raw)


# Any subset of the envelope's fields, each of any JSON type. (st.dictionaries over these
# keys hit a hypothesis-internal IndexError near 10,000 examples; this draws the same space.)
_ENVELOPE_FIELDS = ["v", "id", "type", "site_id", "seq", "payload", "issued_at", "expires_at"]
_ENVELOPE_FIELDS += ["sig"]


@FUZZ
@given(st.fixed_dictionaries({}, optional={k: _JSON for k in _ENVELOPE_FIELDS}))
def test_envelope_fields_of_any_type(message: dict[str, Any]) -> None:
    raw = json.dumps(message).encode()
    _parse_and_check(raw)


@FUZZ
@given(st.binary(max_size=400))
def test_bounded_json_bodies(raw: bytes) -> None:
    try:
        loads_bounded(raw, max_bytes=256, max_depth=8)
    except ValueError:
        pass


_SECTIONS = ["site", "devices", "limits", "storage", "web", "ocpp", "planner", "control",
             "uplink", "flex", "logging"]  # fmt: skip


@FUZZ
@given(
    st.one_of(
        _JSON,
        st.dictionaries(st.sampled_from(_SECTIONS), _JSON, max_size=6),
        st.fixed_dictionaries(
            {
                "site": st.fixed_dictionaries(
                    {"id": st.text(max_size=10)}, optional={"timezone": st.text(max_size=70)}
                )
            },
            optional={s: _JSON for s in _SECTIONS[1:]},
        ),
    )
)
def test_config_validation(data: Any) -> None:
    try:
        validate(data)
    except ConfigErrors as exc:
        assert exc.problems  # every refusal names at least one problem


@FUZZ
@given(st.text(max_size=200))
def test_config_files(tmp_path_factory: Any, text: str) -> None:
    from hems.config import load_config

    path = tmp_path_factory.mktemp("cfg") / "hems.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigErrors as exc:
        assert exc.problems
