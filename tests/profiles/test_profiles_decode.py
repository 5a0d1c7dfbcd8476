"""Pure register decoding: word orders, scales, sentinels, NaN/inf, signs, derived values."""

from __future__ import annotations

import math
import struct

import pytest

from hems.devices.modbus.profile import Register, parse_profile
from hems.devices.modbus.profile_decode import (
    DecodeError,
    decode_all,
    decode_raw,
    decode_register,
    encode_raw,
    encode_value,
    int_to_words,
    words_to_int,
)


def f32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


@pytest.mark.parametrize(
    ("words", "type_", "order", "expected"),
    [
        ([0xFFFF], "int16", "big", -1),
        ([0xFFFF], "uint16", "big", 65535),
        ([0x8000], "int16", "big", -32768),
        ([0x0001, 0x0002], "uint32", "big", 0x00010002),
        ([0x0002, 0x0001], "uint32", "little", 0x00010002),
        ([0xFFFF, 0xFFFE], "int32", "big", -2),
        ([0xFFFE, 0xFFFF], "int32", "little", -2),
        ([0, 0, 0, 1], "uint64", "big", 1),
        ([1, 0, 0, 0], "uint64", "little", 1),
        ([0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], "int64", "big", -1),
        (f32(230.5), "float32", "big", 230.5),
        (f32(230.5)[::-1], "float32", "little", 230.5),
        ([0x5375, 0x6E53], "string", "big", "SunS"),
        ([0x4142, 0x4300, 0x4444], "string", "big", "ABC"),
    ],
)
def test_decode_raw_table(words: list[int], type_: str, order: str, expected: object) -> None:
    assert decode_raw(words, type_, order) == expected


def test_words_roundtrip_and_range() -> None:
    for value, width in ((-1, 1), (123456, 2), (-(2**31), 2), (2**48, 4)):
        for order in ("big", "little"):
            assert words_to_int(int_to_words(value, width, order), value < 0, order) == value
    with pytest.raises(ValueError):
        int_to_words(70000, 1, "big")
    with pytest.raises(ValueError):
        decode_raw([1], "int32")  # short


def reg(**kw: object) -> Register:
    return Register.model_validate({"address": 0, **kw})


def test_scale_invert_and_exponent() -> None:
    assert decode_register("x", reg(type="uint16", scale=0.1), [575], "big") == 57.5
    assert decode_register("x", reg(type="int32", invert=True), [0, 1500], "big") == -1500.0
    assert decode_register("x", reg(type="int16", invert=True), [0], "big") == 0.0
    assert math.copysign(1, decode_register("x", reg(type="int16", invert=True), [0], "big")) == 1
    sf = reg(type="int16", scale_register="sf")
    assert decode_register("x", sf, [12345], "big", scale_exponent=-2) == pytest.approx(123.45)
    with pytest.raises(DecodeError, match="scale register sf unavailable"):
        decode_register("x", sf, [1], "big")
    with pytest.raises(DecodeError, match="scale exponent 99"):
        decode_register("x", sf, [1], "big", scale_exponent=99)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_floats_are_rejected(bad: float) -> None:
    with pytest.raises(DecodeError, match="not a finite number"):
        decode_register("power_w", reg(type="float32"), f32(bad), "big")


def test_sentinels_are_rejected_never_zero() -> None:
    r = reg(type="int16", nan=[0x8000, 0x7FFF])
    with pytest.raises(DecodeError, match="not available"):
        decode_register("p", r, [0x7FFF], "big")
    # 0x8000 as int16 is -32768: sentinels are compared on the raw value.
    r2 = reg(type="uint32", nan=[0xFFFFFFFF])
    with pytest.raises(DecodeError, match=r"sentinel 0xFFFFFFFF"):
        decode_register("e", r2, [0xFFFF, 0xFFFF], "big")
    assert decode_register("e", r2, [0, 5], "big") == 5.0


PROFILE = """\
family: t
products: [{brand: T}]
word_order: little
registers:
  state: {table: input, address: 10, type: uint16}
  batt: {table: input, address: 11, type: uint16, quantity: power_w, role: battery,
         sign_from: {register: state, mask: 0x04}}
  sf: {table: input, address: 12, type: int16, nan: [0x8000]}
  pv: {table: input, address: 13, type: uint32, scale_register: sf, quantity: power_w, role: pv}
  imp: {table: input, address: 15, type: uint16}
  exp: {table: input, address: 16, type: uint16}
  setp: {address: 100, type: int16, writable: true, invert: true, scale: 10, range: [-5000, 5000]}
derived:
  grid: {add: [imp], subtract: [exp], quantity: power_w, role: grid}
sources: [x]
"""


def test_decode_all_with_sign_register_exponent_and_derived() -> None:
    p = parse_profile(PROFILE, "t.yaml")
    words = {"input": {10: 0x04, 11: 800, 12: 0xFFFF, 13: 2300 * 10, 14: 0, 15: 900, 16: 100}}
    values, errors = decode_all(p, words)
    assert errors == {"setp": "holding register 100 was not read"}
    assert values["batt"] == -800.0
    assert values["pv"] == pytest.approx(2300.0)  # low word first, sf -1
    assert values["grid"] == 800.0
    words["input"][10] = 0x02  # charging
    words["input"][12] = 0x8000  # scale factor not available
    del words["input"][16]
    values, errors = decode_all(p, words)
    assert values["batt"] == 800.0
    assert "pv" not in values and "scale register sf is not available" in errors["pv"]
    assert errors["exp"] == "input register 16 was not read"
    assert errors["grid"] == "needs exp"


def test_encode_checks_range_and_applies_scale_and_sign() -> None:
    p = parse_profile(PROFILE, "t.yaml")
    setp = p.registers["setp"]
    assert encode_value("setp", setp, 1500.0, "big") == [(-150) & 0xFFFF]
    with pytest.raises(DecodeError, match=r"6000 outside -5000\.\.5000"):
        encode_value("setp", setp, 6000.0, "big")
    with pytest.raises(DecodeError, match="cannot write nan"):
        encode_value("setp", setp, math.nan, "big")
    assert encode_raw("setp", setp, -2, "big") == [0xFFFE]
    with pytest.raises(DecodeError, match="does not fit"):
        encode_raw("state", p.registers["state"], -1, "big")
