"""Pure register decoding and encoding for profiles: words in, engineering values out.

Nothing here does I/O. Bad input raises `DecodeError` naming the register and the reason;
the adapter turns it into `BadValue` for its device. A sentinel or NaN/inf never becomes 0.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

from hems.devices.modbus.profile import REG_WIDTH, Profile, Register


class DecodeError(ValueError):
    def __init__(self, register: str, reason: str) -> None:
        super().__init__(f"{register}: {reason}")
        self.register = register
        self.reason = reason


def words_to_int(words: Sequence[int], signed: bool, word_order: str) -> int:
    """Join 16-bit words into one integer. `big`: the first word is the most significant."""
    ordered = list(words) if word_order == "big" else list(reversed(words))
    value = 0
    for w in ordered:
        if not 0 <= w <= 0xFFFF:
            raise ValueError(f"word {w} is not 0..65535")
        value = (value << 16) | w
    bits = 16 * len(words)
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def int_to_words(value: int, width: int, word_order: str) -> list[int]:
    bits = 16 * width
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise ValueError(f"{value} does not fit {bits} bits")
    value &= (1 << bits) - 1
    words = [(value >> (16 * (width - 1 - i))) & 0xFFFF for i in range(width)]
    return words if word_order == "big" else list(reversed(words))


def decode_raw(words: Sequence[int], type_: str, word_order: str = "big") -> int | float | str:
    """The raw value of one register (before scale): int, float, or str."""
    if type_ == "string":
        data = b"".join(struct.pack(">H", w) for w in words)
        return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
    width = REG_WIDTH[type_]
    if len(words) != width:
        raise ValueError(f"{type_} needs {width} words, got {len(words)}")
    if type_ == "float32":
        ordered = list(words) if word_order == "big" else list(reversed(words))
        return struct.unpack(">f", struct.pack(">HH", *ordered))[0]
    return words_to_int(words, type_.startswith("int"), word_order)


def _unsigned(reg: Register, raw: int) -> int:
    return raw & ((1 << (16 * reg.width)) - 1)


def is_sentinel(reg: Register, raw: int) -> bool:
    """Sentinels are listed as register contents (0x8000), whatever the signedness."""
    return raw in reg.nan or _unsigned(reg, raw) in reg.nan


def decode_register(
    name: str,
    reg: Register,
    words: Sequence[int],
    word_order: str,
    scale_exponent: int | None = None,
) -> float | str:
    """One register's engineering value in hems conventions (scaled, sign-corrected).

    `scale_exponent` is the decoded value of `reg.scale_register` (SunSpec style, 10**sf).
    """
    try:
        raw = decode_raw(words, reg.type, word_order)
    except (ValueError, struct.error) as exc:
        raise DecodeError(name, str(exc)) from None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int) and is_sentinel(reg, raw):
        raise DecodeError(name, f"not available (sentinel 0x{_unsigned(reg, raw):X})")
    value = float(raw)
    if not math.isfinite(value):
        raise DecodeError(name, f"not a finite number ({value})")
    if reg.scale_register is not None:
        if scale_exponent is None:
            raise DecodeError(name, f"scale register {reg.scale_register} unavailable")
        if not -10 <= scale_exponent <= 10:
            raise DecodeError(name, f"scale exponent {scale_exponent} out of -10..10")
        value *= 10.0**scale_exponent
    if reg.scale is not None:
        value *= reg.scale
    if reg.invert:
        value = -value
    return value + 0.0  # no negative zero


def decode_all(
    profile: Profile,
    words_by_table: Mapping[str, Mapping[int, int]],
    names: Sequence[str] | None = None,
) -> tuple[dict[str, float | str], dict[str, str]]:
    """Decode registers (default: all) and the profile's derived values from snapshots
    (table -> address -> word).

    Returns (values, errors): a register that is missing or bad is left out of values and
    its reason is in errors; the others still decode. A derived value is computed when all
    its terms are wanted, and is an error when one of them is bad.
    """
    wanted = list(profile.registers) if names is None else list(names)
    values: dict[str, float | str] = {}
    errors: dict[str, str] = {}
    for name in wanted:
        reg = profile.registers[name]
        try:
            exp = None
            if reg.scale_register is not None:
                exp = _exponent(profile, name, reg.scale_register, words_by_table)
            words = _words(name, reg, words_by_table)
            value = decode_register(name, reg, words, profile.word_order_of(reg), exp)
            if reg.sign_from is not None and isinstance(value, float):
                value = _signed(profile, name, reg, value, words_by_table)
            values[name] = value
        except DecodeError as exc:
            errors[name] = exc.reason
    for name, d in profile.derived.items():
        terms = [*d.add, *d.subtract]
        if any(t not in wanted for t in terms):
            continue  # not asked for
        bad = [t for t in terms if not isinstance(values.get(t), float)]
        if bad:
            errors[name] = f"needs {', '.join(bad)}"
            continue
        total = sum(float(values[t]) for t in d.add) - sum(float(values[t]) for t in d.subtract)
        values[name] = total + 0.0
    return values, errors


def _exponent(
    profile: Profile, name: str, sf_name: str, words_by_table: Mapping[str, Mapping[int, int]]
) -> int:
    sf = profile.registers[sf_name]
    raw = decode_raw(_words(sf_name, sf, words_by_table), sf.type, "big")
    assert isinstance(raw, int)
    if is_sentinel(sf, raw):
        raise DecodeError(name, f"scale register {sf_name} is not available")
    return raw


def _signed(
    profile: Profile,
    name: str,
    reg: Register,
    value: float,
    words_by_table: Mapping[str, Mapping[int, int]],
) -> float:
    assert reg.sign_from is not None
    d_name = reg.sign_from.register_name
    d_reg = profile.registers[d_name]
    d_words = _words(d_name, d_reg, words_by_table)
    raw = decode_raw(d_words, d_reg.type, profile.word_order_of(d_reg))
    assert isinstance(raw, int)
    negative = raw in reg.sign_from.values or bool(raw & reg.sign_from.mask)
    return -abs(value) if negative else abs(value)


def _words(name: str, reg: Register, words_by_table: Mapping[str, Mapping[int, int]]) -> list[int]:
    table = words_by_table.get(reg.table, {})
    try:
        return [table[reg.address + i] for i in range(reg.width)]
    except KeyError:
        raise DecodeError(name, f"{reg.table} register {reg.address} was not read") from None


def encode_value(name: str, reg: Register, value: float, word_order: str) -> list[int]:
    """Engineering value -> words to write (inverse of decode_register, fixed scale only)."""
    if not math.isfinite(value):
        raise DecodeError(name, f"cannot write {value}")
    if reg.range is not None and not reg.range[0] <= value <= reg.range[1]:
        raise DecodeError(name, f"{value:g} outside {reg.range[0]:g}..{reg.range[1]:g}")
    if reg.invert:
        value = -value
    if reg.scale is not None:
        value /= reg.scale
    if reg.type == "float32":
        packed = struct.unpack(">HH", struct.pack(">f", value))
        return list(packed) if word_order == "big" else list(reversed(packed))
    return encode_raw(name, reg, round(value), word_order)


def encode_raw(name: str, reg: Register, raw: int, word_order: str) -> list[int]:
    """A raw value from a profile's write step (a mode code, a command word)."""
    signed = reg.type.startswith("int")
    bits = 16 * reg.width
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= raw <= hi:
        raise DecodeError(name, f"raw {raw} does not fit {reg.type}")
    return int_to_words(raw, reg.width, word_order)
