"""Charger quirk profiles: how a charger family deviates from the spec, as data.

One YAML file per family in `drivers/chargers/`, validated on load; a bad file gives one
line per problem naming the file, the key path and the line, e.g.
`drivers/chargers/x.yaml: limit.fallback.key: is required (line 7)`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hems.errors import ConfigError

OcppVersion = Literal["1.6", "2.0.1"]


class _Q(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Caveat(_Q):
    text: str
    link: str | None = None


class Fallback(_Q):
    """How to limit when SetChargingProfile is Rejected / NotSupported / NotImplemented."""

    method: Literal["change_configuration", "set_variables", "data_transfer"]
    # change_configuration: the 1.6 key; set_variables: "Component.Variable"
    key: str | None = None
    unit: Literal["A", "W"] = "A"
    vendor_id: str | None = None  # data_transfer
    message_id: str | None = None  # data_transfer
    # data_transfer payload; {limit} is replaced by the number in `unit`, {phases} by 1 or 3
    data: str = "{limit}"

    @model_validator(mode="after")
    def _needs(self) -> Fallback:
        if self.method in ("change_configuration", "set_variables") and not self.key:
            raise ValueError(f"key: is required for method {self.method}")
        if self.method == "data_transfer" and not self.vendor_id:
            raise ValueError("vendor_id: is required for method data_transfer")
        return self

    def payload(self, limit: float, phases: int) -> str:
        """The data_transfer `data` with `{limit}` and `{phases}` filled in."""
        return self.data.replace("{limit}", f"{limit:g}").replace("{phases}", str(phases))


class LimitQuirks(_Q):
    method: Literal["charging_profile", "fallback"] = "charging_profile"
    profile_purpose: Literal["tx_default", "tx", "charge_point_max"] = "tx_default"
    unit: Literal["A", "W"] = "A"
    stack_level: int = Field(default=1, ge=0, le=99)
    phase_switching: bool = False  # numberPhases in the schedule period is honoured
    fallback: Fallback | None = None

    @model_validator(mode="after")
    def _fallback_present(self) -> LimitQuirks:
        if self.method == "fallback" and self.fallback is None:
            raise ValueError("fallback: is required when method is 'fallback'")
        return self


class QuirkProfile(_Q):
    family: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    ocpp_version: OcppVersion
    description: str = ""
    products: list[dict[str, Any]] = Field(default_factory=list)
    caveats: list[Caveat] = Field(default_factory=list)
    limit: LimitQuirks = Field(default_factory=LimitQuirks)
    # Measurands asked for at boot (MeterValuesSampledData / TxUpdatedMeasurands).
    measurands: list[str] = Field(
        default_factory=lambda: [
            "Energy.Active.Import.Register",
            "Power.Active.Import",
            "Current.Import",
        ]
    )
    configure_meter_values: bool = True  # set the interval and measurands at boot
    # The unit assumed when a sampled value has no unitOfMeasure (spec default: Wh / W).
    default_energy_unit: Literal["Wh", "kWh"] = "Wh"
    # What the register means; hems always subtracts the transaction's meter start anyway.
    energy_register: Literal["lifetime", "session"] = "lifetime"
    # standard: trust SuspendedEV/SuspendedEVSE. ev_when_paused: reports SuspendedEV while
    # the CSMS holds it at 0 A. charging_at_zero: stays "Charging" while the car draws 0.
    suspended: Literal["standard", "ev_when_paused", "charging_at_zero"] = "standard"
    # GB SCP Regulations 2021 randomised delay of the charger firmware [s].
    randomised_delay_max_s: float = Field(default=0.0, ge=0, le=1800)
    # How a DSR (aggregator) change is flagged so the charger skips its delay.
    dsr_signal: Literal["none", "custom_data", "data_transfer"] = "none"
    dsr_vendor_id: str = "org.hems"

    @model_validator(mode="after")
    def _dsr(self) -> QuirkProfile:
        if self.dsr_signal == "custom_data" and self.ocpp_version != "2.0.1":
            raise ValueError("dsr_signal: custom_data exists only in OCPP 2.0.1")
        fb = self.limit.fallback
        if fb and fb.method == "set_variables" and self.ocpp_version != "2.0.1":
            raise ValueError("limit.fallback.method: set_variables exists only in OCPP 2.0.1")
        if fb and fb.method == "change_configuration" and self.ocpp_version != "1.6":
            raise ValueError("limit.fallback.method: change_configuration is OCPP 1.6 only")
        return self


def drivers_dir() -> Path:
    """drivers/chargers: the `drivers` package data (repo checkout and wheel alike)."""
    try:
        from importlib import resources

        return Path(str(resources.files("drivers"))) / "chargers"
    except (ModuleNotFoundError, TypeError):
        return Path(__file__).resolve().parents[3] / "drivers" / "chargers"


def _lines(text: str) -> dict[tuple[Any, ...], int]:
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, loc: tuple[Any, ...]) -> None:
        lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                lines[(*loc, k.value)] = k.start_mark.line + 1
                walk(v, (*loc, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))

    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is not None:
        walk(node, ())
    return lines


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def load_profile_file(path: Path) -> QuirkProfile:
    """Parse and validate one quirk file; ConfigError names file, key path and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
        lines = _lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            str(path),
            f"not valid YAML: {getattr(exc, 'problem', exc)}",
            mark.line + 1 if mark else None,
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "must be a mapping (family, ocpp_version, limit, …)")
    try:
        profile = QuirkProfile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msg = msg.removeprefix("Value error, ")
            problems.append(f"{_where(loc)}: {msg}" + (f" (line {line})" if line else ""))
        raise ConfigError(str(path), "; ".join(problems)) from None
    if profile.family != path.stem:
        raise ConfigError(
            str(path),
            f"family: {profile.family!r} must equal the file name",
            lines.get(("family",)),
        )
    return profile


@cache
def load_profile(name: str, folder: Path | None = None) -> QuirkProfile:
    """The profile `drivers/chargers/<name>.yaml`."""
    folder = folder or drivers_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise ConfigError("quirks", f"unknown charger profile {name!r} (known: {known})")
    return load_profile_file(path)


def default_profile(version: OcppVersion) -> QuirkProfile:
    return load_profile(f"generic-{version}")


def all_profiles(folder: Path | None = None) -> dict[str, QuirkProfile]:
    folder = folder or drivers_dir()
    return {p.stem: load_profile_file(p) for p in sorted(folder.glob("*.yaml"))}
