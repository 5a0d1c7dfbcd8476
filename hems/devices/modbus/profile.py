"""Device profiles: a device family's Modbus register map as validated data (`drivers/*.yaml`).

A profile lists its products, how to recognise it on the bus, its registers (address, table,
type, word order, scale, unit, the hems quantity and role they feed, sentinels, sign), its
controls and battery modes as ordered write sequences, and caveats with links.
`load_profile(path)` validates one file; every problem is reported as
`drivers/x.yaml: registers.battery_soc_pct.type: unknown type 'int17' (line 23)`.
`shipped_profiles()` loads every profile in the `drivers` package.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hems.core.capabilities import BatteryMode
from hems.core.readings import Quantity, Role
from hems.errors import ConfigError
from hems.yamllines import Loc, format_loc, line_for, load_with_lines

REG_WIDTH = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
}
REG_TYPES = (*REG_WIDTH, "string")
MAX_ADDRESS = 65535
Capability = Literal["meter", "pv", "battery", "battery-control", "pv-limit", "relay"]
Source = Literal["power_w", "charge_power_w", "discharge_power_w", "abs_power_w", "limit_pct"]
ControlName = Literal["pv_limit", "relay_on", "relay_off"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Product(_Model):
    brand: str = Field(min_length=1)
    models: list[str] = Field(default_factory=list)


class Caveat(_Model):
    text: str = Field(min_length=1)
    link: str = Field(default="", pattern=r"^(https?://\S+)?$")


class Identify(_Model):
    """How `match_profile` recognises the family: a register whose value is one of `values`
    (numbers), or starts with one of `prefixes` (strings)."""

    register_name: str = Field(alias="register")
    values: list[int] = Field(default_factory=list)
    prefixes: list[str] = Field(default_factory=list)
    range: tuple[float, float] | None = None  # plausible decoded value


class SignFrom(_Model):
    """Some devices report a magnitude plus a direction elsewhere: negate when the direction
    register holds one of `values`, or has any bit of `mask` set."""

    register_name: str = Field(alias="register")
    values: list[int] = Field(default_factory=list)
    mask: int = Field(default=0, ge=0, le=0xFFFFFFFF)


class Derived(_Model):
    """A quantity computed from decoded registers: sum(add) - sum(subtract)."""

    add: list[str] = Field(default_factory=list)
    subtract: list[str] = Field(default_factory=list)
    quantity: Quantity
    role: Role
    unit: str = ""


class Register(_Model):
    address: int = Field(ge=0, description="protocol (0-based) address")
    table: Literal["holding", "input"] = "holding"
    type: str
    length: int | None = Field(default=None, ge=1, le=125, description="string: registers")
    word_order: Literal["big", "little"] | None = None  # None: the profile's default
    scale: float | None = Field(default=None, description="fixed factor, raw * scale")
    scale_register: str | None = None  # SunSpec-style exponent: raw * 10**sf
    unit: str = ""
    quantity: Quantity | None = None
    role: Role | None = None
    nan: list[int] = Field(default_factory=list, description="raw sentinel values")
    invert: bool = False  # multiply by -1 to reach hems sign conventions
    sign_from: SignFrom | None = None
    writable: bool = False
    range: tuple[float, float] | None = None  # allowed write range in engineering units
    description: str = ""

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in REG_TYPES:
            raise ValueError(f"unknown type {value!r}; expected one of {', '.join(REG_TYPES)}")
        return value

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, value: float | None) -> float | None:
        if value is not None and value == 0:
            raise ValueError("scale must not be 0")
        return value

    @property
    def width(self) -> int:
        return (self.length or 0) if self.type == "string" else REG_WIDTH[self.type]


class WriteStep(_Model):
    """One write of an ordered sequence: a raw `value`, or a value from the request."""

    register_name: str = Field(alias="register")
    value: int | None = None
    source: Source | None = None
    when: Literal["always", "charge", "discharge"] = "always"  # by the requested power's sign


class Profile(_Model):
    family: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str = ""
    products: list[Product] = Field(min_length=1)
    identify: Identify | None = None
    default_unit_id: int = Field(default=1, ge=0, le=247)
    word_order: Literal["big", "little"] = "big"
    capabilities: list[Capability] = Field(default_factory=list)
    battery_modes: list[BatteryMode] = Field(default_factory=list)
    registers: dict[str, Register] = Field(min_length=1)
    derived: dict[str, Derived] = Field(default_factory=dict)
    modes: dict[BatteryMode, list[WriteStep]] = Field(default_factory=dict)
    controls: dict[ControlName, list[WriteStep]] = Field(default_factory=dict)
    caveats: list[Caveat] = Field(default_factory=list)
    sources: list[str] = Field(min_length=1, description="public register documentation")

    def roles(self) -> set[Role]:
        found = {r.role for r in self.registers.values() if r.role is not None}
        return found | {d.role for d in self.derived.values()}

    def word_order_of(self, reg: Register) -> str:
        return reg.word_order or self.word_order


class ProfileError(ConfigError):
    """Every problem in one profile file, each naming file, path and line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        lines = [f"{source}: {p}" for p in problems]
        Exception.__init__(self, "\n".join(lines))
        self.field = source
        self.problem = "; ".join(problems)
        self.line = None
        self.problems = lines


# -- semantic checks -------------------------------------------------------------------------


def _check(p: Profile) -> Iterator[tuple[Loc, str]]:
    """Cross-field rules pydantic cannot express per field."""
    spans: dict[str, list[tuple[int, int, str]]] = {"holding": [], "input": []}
    for name, reg in p.registers.items():
        here = ("registers", name)
        if reg.type == "string" and reg.length is None:
            yield (*here, "length"), "a string needs 'length' (registers)"
        if reg.type != "string" and reg.length is not None:
            yield (*here, "length"), "only a string has a length"
        width = reg.width
        if width and reg.address + width - 1 > MAX_ADDRESS:
            yield (
                (*here, "address"),
                (f"{reg.type} at {reg.address} ends at {reg.address + width - 1}, beyond 65535"),
            )
        if reg.scale is not None and reg.scale_register is not None:
            yield (*here, "scale_register"), "give either 'scale' or 'scale_register', not both"
        if reg.scale_register is not None:
            sf = p.registers.get(reg.scale_register)
            if sf is None:
                yield (
                    (*here, "scale_register"),
                    (f"scale register {reg.scale_register!r} is not defined"),
                )
            elif sf.type not in ("int16", "uint16"):
                yield (
                    (*here, "scale_register"),
                    (f"scale register {reg.scale_register!r} must be int16, not {sf.type}"),
                )
        if reg.quantity is not None and reg.role is None:
            yield (*here, "role"), "a register with a quantity needs a role"
        if reg.type in ("string", "float32") and reg.nan:
            yield (*here, "nan"), f"sentinels apply to integer types, not {reg.type}"
        if reg.writable and reg.table != "holding":
            yield (*here, "writable"), "only holding registers can be written"
        if reg.range is not None and reg.range[0] > reg.range[1]:
            yield (*here, "range"), "range is [min, max] with min <= max"
        if reg.sign_from is not None:
            if reg.sign_from.register_name not in p.registers:
                yield (
                    (*here, "sign_from", "register"),
                    (f"register {reg.sign_from.register_name!r} is not defined"),
                )
            if not reg.sign_from.values and not reg.sign_from.mask:
                yield (*here, "sign_from"), "needs 'values' or 'mask'"
        if width:
            spans[reg.table].append((reg.address, reg.address + width - 1, name))
    for table, items in spans.items():
        items.sort()
        reach: tuple[int, int, str] | None = None  # the span reaching furthest so far
        for b0, b1, n1 in items:
            if reach is not None and b0 <= reach[1]:
                a0, a1, n0 = reach
                yield (
                    ("registers", n1, "address"),
                    (f"{table} {b0}..{b1} overlaps registers.{n0} ({a0}..{a1})"),
                )
            if reach is None or b1 > reach[1]:
                reach = (b0, b1, n1)
    for name, d in p.derived.items():
        if name in p.registers:
            yield ("derived", name), f"{name!r} is also a register"
        for i, ref in enumerate([*d.add, *d.subtract]):
            if ref not in p.registers:
                yield ("derived", name), f"register {ref!r} (term {i + 1}) is not defined"
        if not d.add and not d.subtract:
            yield ("derived", name), "needs 'add' or 'subtract'"
    if p.identify is not None and p.identify.register_name not in p.registers:
        yield ("identify", "register"), f"register {p.identify.register_name!r} is not defined"
    declared = set(p.battery_modes)
    for mode in p.modes:
        if mode not in declared:
            yield ("modes", str(mode)), f"mode {mode} has steps but is not in battery_modes"
    for mode in declared - set(p.modes):
        yield ("battery_modes",), f"mode {mode} is listed but has no write steps under modes"
    if declared and "battery-control" not in p.capabilities:
        yield ("capabilities",), "battery modes need the 'battery-control' capability"
    # A capability is offered only with the writes that do it, and the writes only with it:
    # the control loop counts on what a device declares (curtailment for the export limit).
    for cap, control in (("pv-limit", "pv_limit"), ("relay", "relay_on")):
        if cap in p.capabilities and control not in p.controls:
            yield ("capabilities",), f"'{cap}' needs write steps under controls.{control}"
        if control in p.controls and cap not in p.capabilities:
            yield ("controls", control), f"controls.{control} needs the '{cap}' capability"
    for group, table in (("modes", p.modes), ("controls", p.controls)):
        for key, steps in table.items():
            if not steps:
                yield (group, str(key)), "needs at least one write step"
            for i, step in enumerate(steps):
                yield from _check_step(p, (group, str(key), i), step)


def _check_step(p: Profile, loc: Loc, step: WriteStep) -> Iterator[tuple[Loc, str]]:
    reg = p.registers.get(step.register_name)
    if reg is None:
        yield (*loc, "register"), f"register {step.register_name!r} is not defined"
        return
    if not reg.writable:
        yield (*loc, "register"), f"register {step.register_name!r} is not marked writable"
    if reg.type == "string":
        yield (*loc, "register"), "cannot write a string register"
    if (step.value is None) == (step.source is None):
        yield loc, "give exactly one of 'value' (raw) or 'source'"


# -- loading ---------------------------------------------------------------------------------


def parse_profile(text: str, source: str) -> Profile:
    """Validate one profile's YAML text; `source` names it in errors."""
    try:
        data, lines = load_with_lines(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ProfileError(source, [f"not valid YAML: {exc.problem}{where}"]) from None
    if not isinstance(data, dict):
        raise ProfileError(source, ["must be a mapping (family, products, registers, …)"])
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        problems = [_located(tuple(e["loc"]), _message(e), lines) for e in exc.errors()]
        raise ProfileError(source, problems) from None
    found = [_located(loc, msg, lines) for loc, msg in _check(profile)]
    if found:
        raise ProfileError(source, found)
    return profile


def _located(loc: Loc, msg: str, lines: dict[Loc, int]) -> str:
    line = line_for(loc, lines)
    return f"{format_loc(loc)}: {msg}" + (f" (line {line})" if line else "")


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def load_profile(path: Path | str) -> Profile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(str(path), [f"cannot read: {exc.strerror}"]) from None
    return parse_profile(text, _display(path))


def _display(path: Path) -> str:
    # Name shipped profiles as drivers/x.yaml, whatever the install location.
    return f"drivers/{path.name}" if path.parent.name == "drivers" else str(path)


@cache
def shipped_profiles() -> dict[str, Profile]:
    """Every profile in the `drivers` package, by family. Raises ProfileError on a bad one."""
    out: dict[str, Profile] = {}
    for entry in sorted(resources.files("drivers").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        profile = parse_profile(entry.read_text(encoding="utf-8"), f"drivers/{entry.name}")
        if profile.family in out:
            raise ProfileError(f"drivers/{entry.name}", [f"family {profile.family!r} twice"])
        out[profile.family] = profile
    return out


def get_profile(family: str) -> Profile:
    profiles = shipped_profiles()
    if family not in profiles:
        raise ConfigError("profile", f"unknown profile {family!r}; known: {', '.join(profiles)}")
    return profiles[family]


def profile_schema() -> dict[str, Any]:
    """JSON schema of a profile file (for `hems schema profile`)."""
    return Profile.model_json_schema()
