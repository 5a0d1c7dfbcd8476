"""The site configuration: one YAML file validated by pydantic models.

`load_config(path)` returns a `Config` or raises `ConfigErrors`, whose `problems` each read
like `devices[2].port: must be 1..65535 (line 14)`.

Secrets never need to sit in the file: any string value may be `${env:NAME}` (an environment
variable) or `${file:/path}` (the file's content, stripped; relative paths are taken from
the config file's folder, and systemd's $CREDENTIALS_DIRECTORY works as `${cred:NAME}`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from hems.configmigrate import old_layout_moves
from hems.control.config import ControlConfig, DeviceControlConfig
from hems.core.assets import DeviceRatings
from hems.core.configbase import Port, Strict
from hems.core.site import LimitsConfig, SiteConfig
from hems.devices.config import DeviceConfig
from hems.devices.ocpp.config import ChargerConfig, OcppConfig
from hems.errors import ConfigError
from hems.flex.config import FlexConfig
from hems.planning.config import (
    BatteryPlanConfig,
    DeferrableLoadConfig,
    EvPlanConfig,
    PlannerConfig,
)
from hems.uplink.config import UplinkConfig
from hems.yamllines import Loc, format_loc, line_for, load_with_lines


class StorageConfig(Strict):
    path: Path = Path("/var/lib/hems/hems.db")
    # 300 s: with every stage on and 1 s telemetry the daemon wrote 56 MB a day in real time
    # with 60 s batches, 16 MB with 300 s (bench/sd_budget.py; issue 16's budget is 20 MB).
    batch_interval_s: float = Field(
        default=300.0,
        gt=0,
        le=600,
        description="readings and deferred writes are committed together 2 s after each "
        "wall-clock multiple of this (one that divides 1800, as 300 does, puts every half-hour "
        "period on disk at its end) and at shutdown; a power cut loses at most one batch. "
        "Uplink telemetry does not wait for it while the channel is up",
    )
    raw_retention_h: float = Field(
        default=48.0, gt=0, description="raw_readings: all only (how long raw rows are kept)"
    )
    raw_readings: Literal["latest", "all"] = Field(
        default="latest",
        description="latest: only the newest reading of each series is stored raw (roll-ups "
        "hold the history; far fewer SD-card writes); all: every reading, kept raw_retention_h",
    )
    rollup_retention_days: float = Field(default=396.0, gt=0, description="13 months")


class WebTlsConfig(Strict):
    """HTTPS for the page. Without paths, a self-signed certificate is made on first start
    next to the database (`web-cert.pem`, `web-key.pem`) and reused."""

    cert_path: Path | None = None
    key_path: Path | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> WebTlsConfig:
        if (self.cert_path is None) != (self.key_path is None):
            raise ValueError("key_path: give both cert_path and key_path, or neither")
        return self


class WebConfig(Strict):
    enabled: bool = True
    host: str = Field(
        default="127.0.0.1", description="0.0.0.0 to serve the LAN (a phone); log in needed"
    )
    port: Port = 8080
    tls: WebTlsConfig | None = None
    session_idle_days: float = Field(default=7.0, gt=0, le=90, description="log out after")
    session_max_days: float = Field(default=30.0, gt=0, le=365, description="log in again after")


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(Strict):
    site: SiteConfig
    devices: list[DeviceConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    ocpp: OcppConfig = Field(default_factory=OcppConfig)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    flex: FlexConfig = Field(default_factory=FlexConfig)

    # -- what each stage is given: its section's policy and the devices it serves ---------
    def planner_config(self) -> PlannerConfig:
        """`planner:` with the batteries, EVs and scheduled loads of `devices[]`."""
        batteries, evs, loads = [], [], []
        for d in self.devices:
            battery = getattr(d, "battery", None)
            if battery is not None and battery.capacity_wh is not None:
                batteries.append(BatteryPlanConfig(device_id=d.id, **battery.model_dump()))
            load = getattr(d, "load", None)
            if load is not None and load.run_time_min is not None:
                loads.append(
                    DeferrableLoadConfig(
                        device_id=d.id,
                        **load.model_dump(exclude={"deferrable"}),
                    )
                )
            if isinstance(d, ChargerConfig) and d.ev is not None:
                evs.append(
                    EvPlanConfig(
                        charger_id=d.id,
                        phases=d.phases,
                        voltage_v=d.voltage_v,
                        min_current_a=d.min_current_a,
                        max_current_a=d.max_current_a,
                        **d.ev.model_dump(),
                    )
                )
        return self.planner.with_assets(batteries, evs, loads)

    def control_config(self) -> ControlConfig:
        """`control:` with each device's ratings and tuning from `devices[]`."""
        per_device: dict[str, DeviceControlConfig] = {}
        for d in self.devices:
            battery = getattr(d, "battery", None)
            load = getattr(d, "load", None)
            options = getattr(d, "control", None)
            rated_w = getattr(d, "rated_w", None)
            if battery is None and load is None and options is None and rated_w is None:
                continue
            per_device[d.id] = DeviceControlConfig(
                max_charge_w=battery.max_charge_w if battery else None,
                max_discharge_w=battery.max_discharge_w if battery else None,
                rated_w=rated_w,
                load_power_w=load.power_w if load else None,
                deferrable=load.deferrable if load else True,
                **(options.model_dump() if options else {}),
            )
        return self.control.with_devices(per_device)

    def device_ratings(self) -> dict[str, DeviceRatings]:
        """Each rated device's ratings from `devices[]` (battery:, rated_w, load:, a
        charger's max_current_a × voltage_v × phases); devices with none are left out."""
        ratings: dict[str, DeviceRatings] = {}
        for d in self.devices:
            battery = getattr(d, "battery", None)
            load = getattr(d, "load", None)
            rated_w = getattr(d, "rated_w", None)
            charger_w = (
                d.max_current_a * d.voltage_v * d.phases if isinstance(d, ChargerConfig) else None
            )
            if battery is None and load is None and rated_w is None and charger_w is None:
                continue
            ratings[d.id] = DeviceRatings(
                max_charge_w=battery.max_charge_w if battery else None,
                max_discharge_w=battery.max_discharge_w if battery else None,
                rated_w=rated_w,
                load_power_w=load.power_w if load else None,
                capacity_wh=battery.capacity_wh if battery else None,
                max_power_w=charger_w,
            )
        return ratings

    def ocpp_config(self) -> OcppConfig:
        """`ocpp:` serving the `type: ocpp` entries of `devices[]`."""
        return self.ocpp.with_chargers([d for d in self.devices if isinstance(d, ChargerConfig)])

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for device in devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} is used twice")
            seen.add(device.id)
        return devices


class ConfigErrors(ConfigError):
    """Every problem found in one file, so the user fixes them in one pass."""

    def __init__(self, problems: list[str]) -> None:
        Exception.__init__(self, "\n".join(problems))
        self.problems = problems


# -- loading ---------------------------------------------------------------------------------

_SECRET = re.compile(r"^\$\{(env|file|cred):([^}]+)\}$")
_NAMED_FIELD = re.compile(r"^([a-z_][a-z0-9_]*): (.+)$")


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    try:
        return load_with_lines(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigErrors([f"{source}: not valid YAML: {exc.problem}{line}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigErrors([f"{source}: not valid YAML: {exc}"]) from exc
    except RecursionError:
        # `a: &a [*a]`: an alias inside its own anchor (or nesting no config needs).
        raise ConfigErrors(
            [f"{source}: not valid YAML: an alias refers to itself or nesting is too deep"]
        ) from None


def _resolve_secrets(value: Any, loc: Loc, base: Path, problems: list[tuple[Loc, str]]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_secrets(v, (*loc, k), base, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, (*loc, i), base, problems) for i, v in enumerate(value)]
    if isinstance(value, str):
        m = _SECRET.match(value.strip())
        if not m:
            return value
        kind, ref = m.groups()
        if kind == "env":
            if ref not in os.environ:
                problems.append((loc, f"environment variable {ref} is not set"))
                return None
            return os.environ[ref]
        if kind == "cred":
            cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
            if not cred_dir:
                problems.append((loc, "CREDENTIALS_DIRECTORY is not set (systemd LoadCredential=)"))
                return None
            path = Path(cred_dir) / ref
        else:
            path = Path(ref) if Path(ref).is_absolute() else base / ref
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append((loc, f"cannot read secret file {path}: {exc.strerror}"))
            return None
    return value


def _clean_loc(loc: tuple[Any, ...]) -> Loc:
    # A discriminated union puts its tag in the path (devices.2.sunspec.port); the file has
    # no such key, so drop a tag that directly follows a list index.
    tags = _device_tags()
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and out and isinstance(out[-1], int) and part in tags:
            continue
        out.append(part)
    return tuple(out)


def _device_tags() -> set[str]:
    from typing import get_args

    tags: set[str] = set()
    for model in _models_of(DeviceConfig):
        tags.update(get_args(model.model_fields["type"].annotation))
    return tags


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    if kind in ("greater_than_equal", "less_than_equal") and "ge" in ctx and "le" in ctx:
        return f"must be {ctx['ge']}..{ctx['le']}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}"
    if kind == "less_than":
        return f"must be < {ctx['lt']}"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a '{ctx.get('discriminator', 'type').strip(chr(39))}' key"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def validate(data: Any, lines: dict[Loc, int] | None = None, source: str = "config") -> Config:
    """Validate already-parsed data. Raises ConfigErrors listing every problem."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise ConfigErrors([f"{source}: must be a mapping of sections (site, devices, …)"])
    moves = old_layout_moves(data)
    if moves:
        raise ConfigErrors(_old_layout_problems(moves, lines, source))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _clean_loc(err["loc"])
            message = _describe(err, loc)
            # A model-level check names its field first ("host: required when …"): put the
            # field into the path so the line number points at it.
            named = _NAMED_FIELD.match(message) if err.get("type") == "value_error" else None
            if named:
                loc, message = (*loc, named.group(1)), named.group(2)
            line = line_for(loc, lines)
            where = f" (line {line})" if line is not None else ""
            problems.append(f"{format_loc(loc)}: {message}{where}")
        raise ConfigErrors(problems) from None
    cross = _cross_checks(config)
    if cross:
        raise ConfigErrors(
            [f"{format_loc(loc)}: {msg}{_line_suffix(loc, lines)}" for loc, msg in cross]
        )
    return config


def _line_suffix(loc: Loc, lines: dict[Loc, int]) -> str:
    line = line_for(loc, lines)
    return f" (line {line})" if line is not None else ""


def _old_layout_problems(moves: list[Any], lines: dict[Loc, int], source: str) -> list[str]:
    out = [
        f"{source}: written in the old layout, where a device's facts were spread over "
        "several sections; each device is now one devices[] entry "
        "(`hems config migrate FILE` prints the file rewritten):"
    ]
    for m in moves:
        how = f"cannot move automatically: {m.problem}" if m.problem else f"move to {m.new}"
        out.append(f"{format_loc(m.old)}: {how}{_line_suffix(m.old, lines)}")
    return out


def _cross_checks(config: Config) -> list[tuple[Loc, str]]:
    """Rules that span sections (the models check one entry at a time)."""
    problems: list[tuple[Loc, str]] = []
    for i, d in enumerate(config.devices):
        if not isinstance(d, ChargerConfig):
            continue
        if not config.ocpp.enabled:
            problems.append(((("devices", i, "type")), "ocpp needs ocpp.enabled: true"))
        elif d.password is None and not config.ocpp.allow_insecure_chargers:
            problems.append(
                (
                    ("devices", i, "password"),
                    f"required for charger {d.id!r} (security profile 1/2); set "
                    "ocpp.allow_insecure_chargers: true only for a test bench",
                )
            )
    problems += _profile_validity_problems(config)
    planned = {
        d.id
        for d in config.devices
        if getattr(d, "battery", None) is not None and d.battery.capacity_wh is not None  # type: ignore[attr-defined]
    }
    for i, t in enumerate(config.planner.soc_targets):
        if t.device_id not in planned:
            problems.append(
                (
                    ("planner", "soc_targets", i, "device_id"),
                    f"{t.device_id!r} is not a planned battery "
                    "(a devices[] entry with battery: {capacity_wh: …})",
                )
            )
    identities: dict[str, int] = {}
    for i, d in enumerate(config.devices):
        if isinstance(d, ChargerConfig):
            if d.cp_identity in identities:
                problems.append(
                    (("devices", i, "identity"), f"{d.cp_identity!r} is used by another charger")
                )
            identities[d.cp_identity] = i
    return problems


# A profile must outlive a missed refresh or two (a write skipped while the previous one runs,
# a slow answer): its validity has to be this many refresh periods at least.
PROFILE_REFRESHES_MIN = 3


def _profile_validity_problems(config: Config) -> list[tuple[Loc, str]]:
    """ocpp.profile_validity_s against control.refresh_s: a profile that expires between two
    refreshes would hand a healthy charger back to its own default."""
    if not (config.ocpp.enabled and config.control.enabled):
        return []
    need_s = PROFILE_REFRESHES_MIN * config.control.refresh_s
    if config.ocpp.profile_validity_s >= need_s:
        return []
    return [
        (
            ("ocpp", "profile_validity_s"),
            f"must be at least {PROFILE_REFRESHES_MIN} x control.refresh_s "
            f"({need_s:g} s) so a healthy charger's profile is renewed before it expires",
        )
    ]


def _describe(err: dict[str, Any], loc: Loc) -> str:
    # pydantic reports ge and le separately; state the full range when the field has both.
    kind = err.get("type", "")
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bounds = _field_bounds(loc)
        if bounds is not None:
            return f"must be {bounds}"
    return _message(err)


def _field_bounds(loc: Loc) -> str | None:
    from annotated_types import Ge, Le

    models: list[Any] = [Config]
    field_info = None
    for part in loc:
        if isinstance(part, int):
            continue
        if field_info is not None:
            models = _models_of(field_info.annotation)
        field_info = next((m.model_fields[part] for m in models if part in m.model_fields), None)
        if field_info is None:
            return None
    if field_info is None:
        return None
    lo = next((m.ge for m in field_info.metadata if isinstance(m, Ge)), None)
    hi = next((m.le for m in field_info.metadata if isinstance(m, Le)), None)
    return f"{lo}..{hi}" if lo is not None and hi is not None else None


def _models_of(annotation: Any) -> list[Any]:
    """Every pydantic model class inside an annotation (unions, lists, Annotated)."""
    from typing import get_args

    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_of(arg)]


def load_config(path: Path | str) -> Config:
    """Read, resolve secrets in, and validate one config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigErrors([f"{path}: no such file"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigErrors([f"{path}: not UTF-8 text (bad byte at offset {exc.start})"]) from None
    except OSError as exc:
        raise ConfigErrors([f"{path}: cannot read: {exc.strerror}"]) from None
    data, lines = _parse_yaml(text, str(path))
    if data is None:
        raise ConfigErrors([f"{path}: is empty; it needs at least a 'site:' section"])
    secret_problems: list[tuple[Loc, str]] = []
    data = _resolve_secrets(data, (), path.parent, secret_problems)
    problems = [
        f"{format_loc(loc)}: {msg} (line {line_for(loc, lines)})" for loc, msg in secret_problems
    ]
    try:
        config = validate(data, lines, str(path))
    except ConfigErrors as exc:
        raise ConfigErrors(problems + exc.problems) from None
    if problems:
        raise ConfigErrors(problems)
    return config
