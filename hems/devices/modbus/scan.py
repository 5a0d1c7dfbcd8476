"""`hems scan`: find what answers on a Modbus endpoint and say how to configure it.

For each unit id: SunSpec discovery, every model's start address and length, the common
model's identity, a decoded snapshot of the main quantities for the role the models suggest,
and a ready-to-paste `devices:` entry. Every reachable unit is also offered to the device profiles'
matcher (`profile_device.match_profile`); a unit that is not SunSpec but matches a profile is
reported with the profile's decoded registers and a `modbus-profile` entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from hems.core.readings import Role
from hems.devices.modbus.engine import Endpoint, EndpointPool, EndpointSpec
from hems.devices.modbus.sunspec import (
    INVERTER_MODELS,
    METER_MODELS,
    ModelData,
    NotSunSpec,
    discover,
    read_models,
)
from hems.devices.modbus.sunspec_device import BATTERY_MODELS, readings_from_models
from hems.devices.modbus.sunspec_hybrid import MPPT_MODEL, Term, is_hybrid, split_hybrid
from hems.errors import ConfigError, DeviceError

_KNOWN_MODEL_NAMES = {
    1: "common",
    101: "inverter 1-phase",
    102: "inverter split-phase",
    103: "inverter 3-phase",
    111: "inverter 1-phase (float)",
    112: "inverter split-phase (float)",
    113: "inverter 3-phase (float)",
    120: "nameplate",
    121: "basic settings",
    122: "measurements/status",
    123: "immediate controls",
    124: "storage",
    160: "MPPT",
    201: "meter 1-phase",
    202: "meter split-phase",
    203: "meter 3-phase wye",
    204: "meter 3-phase delta",
    211: "meter 1-phase (float)",
    212: "meter split-phase (float)",
    213: "meter 3-phase wye (float)",
    214: "meter 3-phase delta (float)",
    701: "DER AC measurement",
    702: "DER capacity",
    703: "DER enter service",
    704: "DER AC controls",
    713: "DER storage capacity",
    802: "battery",
}


@dataclass
class ModelReport:
    model_id: int
    name: str
    address: int
    length: int
    error: str | None = None


@dataclass
class UnitReport:
    endpoint: str
    unit_id: int
    kind: str  # "sunspec", "profile", "none"
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    version: str | None = None
    base_address: int | None = None
    models: list[ModelReport] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    snapshot: dict[str, dict[str, float]] = field(default_factory=dict)  # role -> quantity
    profiles: list[str] = field(default_factory=list)  # matching drivers/*.yaml families
    profile_values: dict[str, float | str] = field(default_factory=dict)
    hybrid: bool = False  # PV and battery behind one inverter (see sunspec_hybrid)
    points: list[str] = field(default_factory=list)  # "103.W = 4321 W → inverter AC output"
    notes: list[str] = field(default_factory=list)  # why a figure is missing or derived
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def add_error(self, reason: str) -> None:
        self.error = f"{self.error}; {reason}" if self.error else reason


def suggest_roles(model_ids: list[int]) -> list[Role]:
    """The roles a unit's models can serve, most specific first.

    A hybrid (inverter + storage models) gets `pv` only when model 160 is there to give the
    PV figure; without it the AC output cannot be split and only `battery` is suggested.
    """
    roles: list[Role] = []
    if any(m in model_ids for m in METER_MODELS):
        roles.append(Role.GRID)
    if any(m in model_ids for m in BATTERY_MODELS):
        if is_hybrid(model_ids, None) and MPPT_MODEL in model_ids:
            roles.append(Role.PV)
        roles.append(Role.BATTERY)
    elif any(m in model_ids for m in INVERTER_MODELS):
        roles.append(Role.PV)
    return roles


def interpret(decoded: dict[int, ModelData]) -> tuple[list[Term], list[str]]:
    """The raw points behind the snapshot and what each means, plus notes. Pure."""
    terms: list[Term] = []
    notes: list[str] = []

    def term(mid: int, name: str, meaning: str) -> None:
        data = decoded.get(mid)
        if data is not None and name in data.points:
            unit = _unit(data.points[name].units)
            terms.append(Term(f"{mid}.{name}", data.number(name), unit, meaning))

    meter = next((m for m in METER_MODELS if m in decoded), None)
    if meter is not None:
        term(meter, "W", "grid power (+ = import)")
    ids = list(decoded)
    if is_hybrid(ids, None):
        split = split_hybrid(decoded)
        terms += split.terms
        notes += split.notes
        if split.battery_source is not None:
            notes.append(f"battery power from {split.battery_source}")
    elif (inv := next((m for m in INVERTER_MODELS if m in decoded), None)) is not None:
        term(inv, "W", "inverter AC output = PV (no storage models)")
    for mid, name in ((802, "SoC"), (713, "SoC"), (124, "ChaState")):
        if mid in decoded:
            term(mid, name, "battery state of charge")
            break
    term(802, "WHRtg", "battery capacity")
    term(802, "WChaRteMax", "battery max charge rate")
    term(802, "WDisChaRteMax", "battery max discharge rate")
    term(713, "WHRtg", "storage energy rating")
    term(713, "WHAvail", "storage energy available")
    term(124, "WChaMax", "charge/discharge setpoint reference (124 control)")
    return terms, notes


async def scan_unit(endpoint: Endpoint, unit_id: int, profiles: bool = True) -> UnitReport:
    report = UnitReport(endpoint=endpoint.key, unit_id=unit_id, kind="none")
    try:
        smap = await discover(endpoint, unit_id)
    except NotSunSpec as exc:
        report.error = str(exc)
        if profiles:
            await _match_profiles(endpoint, unit_id, report, snapshot=True)
        return report
    except DeviceError as exc:  # nothing answers: do not try 15 profiles into the void
        report.error = str(exc)
        return report
    report.kind = "sunspec"
    report.base_address = smap.base
    decoded: dict[int, ModelData] = {}
    for loc in smap.models:
        mr = ModelReport(
            loc.model_id, _KNOWN_MODEL_NAMES.get(loc.model_id, "?"), loc.address, loc.length
        )
        try:
            decoded.update(await read_models(endpoint, unit_id, [loc]))
        except DeviceError as exc:
            mr.error = exc.reason
        report.models.append(mr)
    common = decoded.get(1)
    if common is not None:
        report.manufacturer = _text(common.get("Mn"))
        report.model = _text(common.get("Md"))
        report.serial = _text(common.get("SN"))
        report.version = _text(common.get("Vr"))
    report.hybrid = is_hybrid(smap.ids, None)
    terms, report.notes = interpret(decoded)
    report.points = [t.line() for t in terms]
    now = datetime.now(UTC)  # a one-shot tool: wall time only labels the snapshot
    for role in suggest_roles(smap.ids):
        report.roles.append(str(role))
        try:
            readings = readings_from_models(role, decoded, "scan", now)
        except DeviceError as exc:
            report.snapshot[str(role)] = {}
            report.add_error(exc.reason)
            continue
        report.snapshot[str(role)] = {str(r.quantity): r.value for r in readings}
    if profiles:  # SunSpec devices with vendor extras (storage control) also have a profile
        await _match_profiles(endpoint, unit_id, report, snapshot=False)
    return report


async def _match_profiles(
    endpoint: Endpoint, unit_id: int, report: UnitReport, snapshot: bool
) -> None:
    # Imported here: the profile layer is optional for scanning SunSpec devices.
    from hems.devices.modbus.profile_device import match_profile, profile_snapshot

    try:
        found = await match_profile(endpoint, unit_id)
    except DeviceError as exc:
        report.add_error(exc.reason)
        return
    if not snapshot:
        # On a SunSpec unit many vendor profiles identify by the SunS marker alone; list
        # only those whose brand is the manufacturer the common model names.
        maker = (report.manufacturer or "").lower()
        found = [p for p in found if maker and any(b.brand.lower() in maker for b in p.products)]
    report.profiles = [p.family for p in found]
    if not found or not snapshot:
        return
    report.kind = "profile"
    report.roles = sorted(str(r) for r in found[0].roles())
    values, errors = await profile_snapshot(endpoint, unit_id, found[0])
    report.profile_values = values
    if errors:
        report.error = "; ".join(f"{k}: {v}" for k, v in errors.items())


def _unit(units: str | None) -> str:
    """The SunSpec definitions' unit spelled for people: "%WHRtg" and "Pct" are %."""
    text = units or ""
    if text.startswith("%") or text == "Pct":
        return "%"
    return "Wh" if text == "WH" else text


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def suggested_entries(report: UnitReport, host: str, port: int) -> list[dict[str, Any]]:
    """A `devices[]` entry per suggested role (the same ones `config_snippet` prints)."""
    out: list[dict[str, Any]] = []
    for role in report.roles or ["grid"]:
        entry: dict[str, Any] = {
            "id": f"{role}-{report.unit_id}" if len(report.roles) > 1 else f"{role}"
        }
        if report.kind == "profile":
            entry |= {"type": "modbus-profile", "profile": report.profiles[0]}
        else:
            entry |= {"type": "sunspec"}
        entry |= {"role": str(role), "host": host, "port": port, "unit_id": report.unit_id}
        if report.kind == "sunspec" and report.base_address is not None:
            entry["base_address"] = report.base_address
        entry["poll_interval_s"] = 1.0
        out.append(entry)
    return out


def config_snippet(report: UnitReport, host: str, port: int) -> str:
    """A `devices:` entry per suggested role, ready to paste into the config."""
    lines: list[str] = []
    for entry in suggested_entries(report, host, port):
        items = list(entry.items())
        lines.append(f"  - {items[0][0]}: {items[0][1]}")
        lines += [f"    {k}: {v}" for k, v in items[1:]]
    return "\n".join(lines)


ScanProgress = Callable[[list[UnitReport], int | None], None]
"""Told before each unit (the reports so far, the unit id about to be scanned) and once at the
end (all reports, None)."""


async def scan_endpoint(
    host: str,
    port: int,
    units: list[int],
    transport: str = "tcp",
    timeout_s: float = 2.0,
    on_progress: ScanProgress | None = None,
) -> list[UnitReport]:
    """Scan each unit id on one Modbus TCP endpoint (its own short-lived connection)."""
    pool = EndpointPool()
    spec = EndpointSpec(
        transport=transport,  # type: ignore[arg-type]
        host=host,
        port=port,
        timeout_s=timeout_s,
        backoff_initial_s=0.1,
        backoff_max_s=0.1,
    )
    endpoint = pool.get(spec)
    reports: list[UnitReport] = []
    try:
        for unit in units:
            if on_progress is not None:
                on_progress(list(reports), unit)
            reports.append(await scan_unit(endpoint, unit))
        if on_progress is not None:
            on_progress(list(reports), None)
        return reports
    finally:
        await pool.close()


def format_text(reports: list[UnitReport], host: str, port: int) -> str:
    out: list[str] = []
    for r in reports:
        out.append(f"{r.endpoint} unit {r.unit_id}: {r.kind}")
        if r.kind == "none":
            out.append(f"  {r.error or 'nothing recognised'}")
            continue
        if r.kind == "profile":
            out.append(f"  matches profile(s): {', '.join(r.profiles)}")
            out.append(f"  snapshot ({r.profiles[0]}):")
            for name, v in r.profile_values.items():
                shown = f"{v:.10g}" if isinstance(v, float) else str(v)
                out.append(f"    {name:<28} {shown}")
            if r.error:
                out.append(f"  problems: {r.error}")
            out += ["  config:", "devices:", config_snippet(r, host, port), ""]
            continue
        ident = " / ".join(x for x in (r.manufacturer, r.model, r.serial) if x)
        out.append(f"  device: {ident or '(no common model)'}  version: {r.version or '-'}")
        out.append(f"  SunSpec base {r.base_address}; models:")
        for m in r.models:
            flag = f"  !! {m.error}" if m.error else ""
            out.append(f"    {m.model_id:>5}  {m.name:<28} at {m.address:>5}  L={m.length}{flag}")
        if r.hybrid:
            out.append("  hybrid: PV and battery behind one inverter")
        if r.points:
            out.append("  points read:")
            out += [f"    {line}" for line in r.points]
        for note in r.notes:
            out.append(f"  note: {note}")
        for role, values in r.snapshot.items():
            out.append(f"  snapshot as {role}:")
            for q, v in values.items():
                out.append(f"    {q:<20} {v:.10g}")
        if r.profiles:
            out.append(f"  also matches profile(s): {', '.join(r.profiles)}")
        if r.error:
            out.append(f"  problems: {r.error}")
        out.append("  config:")
        out.append("devices:")
        out.append(config_snippet(r, host, port))
        out.append("")
    return "\n".join(out)


def format_json(reports: list[UnitReport], host: str, port: int) -> str:
    data = [
        {**r.as_json(), "config": config_snippet(r, host, port) if r.kind != "none" else None}
        for r in reports
    ]
    return json.dumps(data, indent=2)


def parse_target(text: str) -> tuple[str, int]:
    """`host`, `host:port` or `[v6addr]:port` → (host, port)."""
    host, port_text = text, "502"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError("target", f"{text!r}: unclosed '['")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError("target", f"{text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ConfigError("target", f"{text!r}: no host")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError("target", f"{text!r}: port must be 1..65535")
    return host, int(port_text)
