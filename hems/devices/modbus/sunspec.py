"""SunSpec: find the `SunS` marker, walk the model chain, decode models.

Decoding uses the official model definitions shipped in pysunspec2 (`sunspec2.device.Model`
and its JSON defs): no hand-typed offsets here. On top of pysunspec2 we are strict where it
is lenient:

* a "not implemented" sentinel (0x8000, 0xFFFF, 0 for accumulators, the SunSpec NaN
  0x7FC00000 for floats, …) decodes to None, never 0;
* any other NaN/inf float, a scale factor outside -10..10, or a value whose scale factor is
  "not implemented" is *bad*: its value is None and `PointValue.bad` says why. Callers that
  need the point raise `BadValue` (see `ModelData.require`).

Every point carries its absolute register address, so errors can name it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sunspec2 import device as ss_device

from hems.devices.modbus.engine import MAX_READ_REGISTERS, Endpoint, ModbusRejected
from hems.errors import BadValue, DeviceError

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
BASE_ADDRESSES = (40000, 0, 50000)
END_MODEL_ID = 0xFFFF
MAX_MODELS = 128
_F32_SUNSPEC_NAN = 0x7FC00000
_F64_SUNSPEC_NAN = 0x7FF8000000000000

INVERTER_MODELS = (103, 102, 101, 113, 112, 111, 701)
METER_MODELS = (203, 204, 202, 201, 213, 214, 212, 211)


class NotSunSpec(DeviceError):
    """No `SunS` marker at any base address, or a model chain that cannot be walked."""


@dataclass(frozen=True, slots=True)
class ModelLoc:
    model_id: int
    address: int  # register of the model's ID point
    length: int  # L: registers after the two-register header

    @property
    def span(self) -> tuple[int, int]:
        """(address, count) of the whole model including its header."""
        return (self.address, self.length + 2)


@dataclass(frozen=True, slots=True)
class SunSpecMap:
    base: int
    models: tuple[ModelLoc, ...]

    def find(self, *model_ids: int) -> ModelLoc | None:
        """The first model present, in the order of preference given."""
        for mid in model_ids:
            for loc in self.models:
                if loc.model_id == mid:
                    return loc
        return None

    @property
    def ids(self) -> list[int]:
        return [m.model_id for m in self.models]


@dataclass(frozen=True, slots=True)
class PointValue:
    name: str  # "W", or "module[2].DCW" inside groups
    value: float | int | str | None  # scaled; None = not implemented or bad
    raw: int | float | str | None  # before scaling; None = not implemented
    address: int
    units: str | None = None
    bad: str | None = None  # why the value cannot be used


@dataclass(slots=True)
class ModelData:
    model_id: int
    address: int
    points: dict[str, PointValue] = field(default_factory=dict)

    def get(self, name: str) -> float | int | str | None:
        p = self.points.get(name)
        return None if p is None else p.value

    def number(self, name: str) -> float | None:
        """The point's value as a float, None if absent, not implemented or bad."""
        v = self.get(name)
        return float(v) if isinstance(v, int | float) else None

    def require(self, who: str, name: str) -> float:
        """The point's numeric value or a `BadValue` naming the model, point and register."""
        p = self.points.get(name)
        if p is None:
            raise BadValue(who, f"model {self.model_id} has no point {name}")
        where = f"model {self.model_id} point {name} (register {p.address})"
        if p.bad:
            raise BadValue(who, f"{where}: {p.bad}")
        if not isinstance(p.value, int | float):
            raise BadValue(who, f"{where}: not implemented")
        return float(p.value)

    def as_dict(self) -> dict[str, Any]:
        return {name: p.value for name, p in self.points.items()}


# -- discovery ---------------------------------------------------------------------------


async def discover(
    endpoint: Endpoint, unit_id: int, bases: Sequence[int] = BASE_ADDRESSES
) -> SunSpecMap:
    """Find the `SunS` marker and walk the (ID, L) chain to the end marker.

    Connection failures and timeouts propagate (the device is not there, retry later); an
    exception reply or a wrong marker at a base just moves on to the next base.
    """
    who = f"{endpoint.key} unit {unit_id}"
    tried: list[str] = []
    for base in bases:
        try:
            marker = await endpoint.read(unit_id, "holding", base, 2)
        except (ModbusRejected, BadValue) as exc:
            tried.append(f"{base} ({exc.reason.split(': ', 1)[-1]})")
            continue
        if tuple(marker) == SUNS_MARKER:
            return SunSpecMap(base, await _walk(endpoint, unit_id, base + 2, who))
        tried.append(f"{base} (0x{marker[0]:04X} 0x{marker[1]:04X})")
    raise NotSunSpec(who, f"no SunSpec 'SunS' marker at {', '.join(tried)}")


async def _walk(endpoint: Endpoint, unit_id: int, address: int, who: str) -> tuple[ModelLoc, ...]:
    models: list[ModelLoc] = []
    while len(models) < MAX_MODELS:
        if address + 2 > 0x10000:
            raise NotSunSpec(who, f"model chain runs past register 65535 at {address}")
        try:
            model_id, length = await endpoint.read(unit_id, "holding", address, 2)
        except ModbusRejected as exc:
            # Some devices omit the end marker: the chain ends where the registers end.
            if exc.exception_code == 2 and models:
                return tuple(models)
            raise
        if model_id == END_MODEL_ID or (model_id == 0 and length == 0):
            return tuple(models)
        if length == 0 or address + 2 + length > 0x10000:
            raise NotSunSpec(
                who, f"model {model_id} at register {address} has impossible length {length}"
            )
        models.append(ModelLoc(model_id, address, length))
        address += 2 + length
    raise NotSunSpec(who, f"more than {MAX_MODELS} models: no end marker")


async def read_models(
    endpoint: Endpoint, unit_id: int, locs: Sequence[ModelLoc]
) -> dict[int, ModelData]:
    """Read several models with coalesced block reads; check each header; decode."""
    ranges: list[tuple[int, int]] = []
    for loc in locs:
        start, count = loc.span
        for offset in range(0, count, MAX_READ_REGISTERS):
            ranges.append((start + offset, min(MAX_READ_REGISTERS, count - offset)))
    values = await endpoint.read_ranges(unit_id, "holding", ranges, max_gap=0)
    who = f"{endpoint.key} unit {unit_id}"
    out: dict[int, ModelData] = {}
    for loc in locs:
        start, count = loc.span
        regs = [values[a] for a in range(start, start + count)]
        if regs[0] != loc.model_id or regs[1] != loc.length:
            raise ModelMoved(
                who,
                f"register {start} now holds model {regs[0]} length {regs[1]}, "
                f"expected model {loc.model_id} length {loc.length}",
            )
        out[loc.model_id] = decode_model(loc.model_id, loc.address, regs, who)
    return out


class ModelMoved(BadValue):
    """The model map changed under us (firmware update, restart): discover again."""


# -- decoding ----------------------------------------------------------------------------


def decode_model(
    model_id: int, address: int, regs: Sequence[int], who: str = "sunspec"
) -> ModelData:
    """Decode one model's registers (header included) with pysunspec2's definition. Pure."""
    if len(regs) < 2:
        raise BadValue(who, f"model {model_id} at {address}: fewer than 2 registers")
    for r in regs:
        if not 0 <= r <= 0xFFFF:
            raise BadValue(who, f"model {model_id} at {address}: {r} is not a register value")
    _check_counts(model_id, address, regs, who)
    data = b"".join(struct.pack(">H", r) for r in regs)
    try:
        model = ss_device.Model(model_id=model_id, model_len=len(regs) - 2, data=data)
    except Exception as exc:  # pysunspec2 raises bare ModelError/KeyError
        raise BadValue(who, f"model {model_id} at {address}: cannot decode ({exc})") from exc
    if model.model_def is None or model.error_info:
        reason = model.error_info.strip() or "no definition shipped with pysunspec2"
        raise BadValue(who, f"model {model_id} at {address}: {reason}")
    out = ModelData(model_id, address)
    try:
        _collect(model, model, "", regs, address, out)
    except (IndexError, KeyError, TypeError, ValueError) as exc:  # a block shorter than declared
        raise BadValue(
            who,
            f"model {model_id} at {address}: block of {len(regs)} registers is too short"
            f" for its definition ({type(exc).__name__}: {exc})",
        ) from None
    return out


def _check_counts(model_id: int, address: int, regs: Sequence[int], who: str) -> None:
    """Repeating groups (705's curves × points) sized by count points in the block must fit
    in it: every repetition takes at least one register. Checked before pysunspec2, whose
    length calculation grows with the counts (seconds for counts in the thousands)."""
    try:
        mdef = ss_device.get_model_def(model_id)
    except Exception:  # no definition: decoding below says so
        return
    offsets: dict[str, int] = {}
    at = 0
    for point in mdef["group"].get("points", []):
        offsets[point["name"]] = at
        at += int(point.get("size", 1))

    def walk(groups: list[dict[str, Any]], multiplier: int) -> None:
        for group in groups:
            count = group.get("count", 1)
            if isinstance(count, str):
                i = offsets.get(count)
                count = regs[i] if i is not None and i < len(regs) else 0
            total = multiplier * int(count)
            if total > len(regs):
                raise BadValue(
                    who,
                    f"model {model_id} at {address}: {group.get('name')} repeats {total} times,"
                    f" more than the {len(regs)} registers of the block can hold",
                )
            walk(group.get("groups", []), max(total, 1))

    walk(mdef["group"].get("groups", []), 1)


def _collect(
    model: Any, group: Any, prefix: str, regs: Sequence[int], address: int, out: ModelData
) -> None:
    for name, point in group.points.items():
        if point.pdef.get("type") == "pad":
            continue  # alignment filler, not a value
        full = f"{prefix}{name}"
        out.points[full] = _point_value(model, group, point, full, regs, address)
    for gname, sub in group.groups.items():
        if isinstance(sub, list):
            for i, g in enumerate(sub, start=1):
                _collect(model, g, f"{prefix}{gname}[{i}].", regs, address, out)
        else:
            _collect(model, sub, f"{prefix}{gname}.", regs, address, out)


def _point_value(
    model: Any, group: Any, point: Any, name: str, regs: Sequence[int], address: int
) -> PointValue:
    pdef = point.pdef
    ptype = pdef.get("type")
    units = pdef.get("units")
    at = address + point.offset
    raw = point.value
    if ptype in ("float32", "float64"):
        raw, bad = _float_raw(ptype, regs[point.offset : point.offset + point.len])
        if bad:
            return PointValue(name, None, None, at, units, bad)
    if raw is None:
        return PointValue(name, None, None, at, units)
    if isinstance(raw, str):
        return PointValue(name, raw.strip(), raw, at, units)
    if not point.sf_required:
        return PointValue(name, raw, raw, at, units)
    sf = _scale_factor(model, group, point)
    if isinstance(sf, str):
        return PointValue(name, None, raw, at, units, sf)
    value = raw * 10.0**sf
    if sf < 0:
        value = round(value, -sf)  # 1234 * 10**-2 is 12.34, not 12.340000000000002
    return PointValue(name, value, raw, at, units)


def _float_raw(ptype: str, words: Sequence[int]) -> tuple[float | None, str | None]:
    if ptype == "float32":
        bits = (words[0] << 16) | words[1]
        if bits == _F32_SUNSPEC_NAN:
            return None, None
        value = struct.unpack(">f", struct.pack(">I", bits))[0]
    else:
        bits = (words[0] << 48) | (words[1] << 32) | (words[2] << 16) | words[3]
        if bits == _F64_SUNSPEC_NAN:
            return None, None
        value = struct.unpack(">d", struct.pack(">Q", bits))[0]
    if not math.isfinite(value):
        return None, f"{ptype} is {value} (0x{bits:X}), not a number"
    return value, None


def _scale_factor(model: Any, group: Any, point: Any) -> int | str:
    """The point's scale factor exponent, or a string saying why it is unusable."""
    if point.sf is None:
        sf = point.sf_value  # a constant exponent in the definition
    else:
        sf_point = group.points.get(point.sf) or model.points.get(point.sf)
        if sf_point is None:
            return f"scale factor {point.sf} missing from the model"
        sf = sf_point.value
        if sf is None:
            return f"scale factor {point.sf} is not implemented (0x8000)"
    if not isinstance(sf, int) or not -10 <= sf <= 10:
        return f"scale factor {point.sf or ''} = {sf} outside -10..10"
    return sf


# -- encoding for writes ------------------------------------------------------------------


def encode_point(data: ModelData, name: str, value: float, who: str) -> tuple[int, list[int]]:
    """(address, registers) that write `value` (in the point's units) to point `name`.

    The scale factor comes from `data`, which must be a fresh read; a bad or missing scale
    factor raises `BadValue` so no setpoint is derived from a bad read.
    """
    point_def = _point_def(data.model_id, name)
    p = data.points.get(name)
    if p is None or point_def is None:
        raise BadValue(who, f"model {data.model_id} has no point {name}")
    if not math.isfinite(value):
        raise BadValue(who, f"model {data.model_id} point {name}: {value} is not a number")
    sf_name = point_def.get("sf")
    raw = value
    if sf_name is not None:
        sf_point = data.points.get(str(sf_name))
        exponent: Any = sf_point.value if sf_point is not None else _int_or_none(sf_name)
        if not isinstance(exponent, int) or not -10 <= exponent <= 10:
            raise BadValue(
                who,
                f"model {data.model_id} point {name} (register {p.address}): "
                f"scale factor {sf_name} unusable ({exponent})",
            )
        raw = value / 10.0**exponent
    return p.address, _to_words(str(point_def["type"]), round(raw), who, name, p.address)


def _to_words(ptype: str, raw: int, who: str, name: str, address: int) -> list[int]:
    limits = {
        "int16": (-0x8000, 0x7FFF, ">h", 1),
        "uint16": (0, 0xFFFF, ">H", 1),
        "enum16": (0, 0xFFFF, ">H", 1),
        "bitfield16": (0, 0xFFFF, ">H", 1),
        "int32": (-0x80000000, 0x7FFFFFFF, ">i", 2),
        "uint32": (0, 0xFFFFFFFF, ">I", 2),
        "enum32": (0, 0xFFFFFFFF, ">I", 2),
    }
    if ptype not in limits:
        raise BadValue(who, f"point {name} (register {address}): cannot write type {ptype}")
    lo, hi, fmt, n = limits[ptype]
    if not lo <= raw <= hi:
        raise BadValue(who, f"point {name} (register {address}): {raw} outside {ptype}")
    packed = struct.pack(fmt, raw)
    return [struct.unpack(">H", packed[2 * i : 2 * i + 2])[0] for i in range(n)]


def _int_or_none(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _point_def(model_id: int, name: str) -> dict[str, Any] | None:
    model_def = ss_device.get_model_def(model_id)
    for p in model_def["group"].get("points", []):
        if p["name"] == name:
            return dict(p)
    return None
