"""The installer's config form: which fields it shows, generated from the config models.

Each field's input type, choices and bounds come from the pydantic model's `model_fields`,
so the form cannot drift from what `hems check-config` accepts. Fields are named by their
path in the file (`limits.fuse_a`, `devices[3].ev.target_energy_wh`), the same spelling
the validation messages use, so each message lands next to its field.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hems.configedit import (
    DELETE,
    Checked,
    Edit,
    apply_edits,
    get_path,
    load_document,
    problems_by_field,
)
from hems.control.config import ControlConfig
from hems.core.assets import BatteryFacts, EvNeeds
from hems.core.site import LimitsConfig, SiteConfig
from hems.planning.config import OctopusConfig, PlannerConfig, PvArrayConfig, TariffConfig
from hems.yamllines import Loc, format_loc

Kind = Literal["number", "integer", "text", "choice"]


@dataclass(frozen=True, slots=True)
class FormField:
    loc: Loc
    label: str
    kind: Kind
    hint: str  # the model's description and bounds, e.g. "main fuse per phase [A]; > 0, ≤ 400"
    default: str  # shown as the placeholder; "" when the field is required
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive bounds only (the browser's min/max)
    maximum: float | None = None
    value: str = ""

    @property
    def name(self) -> str:
        return format_loc(self.loc)


@dataclass(frozen=True, slots=True)
class FormSection:
    title: str
    fields: tuple[FormField, ...]


def sections(doc: Mapping[str, object]) -> list[FormSection]:
    """The form over the round-trip document: the sections the installer sets up, with
    the document's current values. Device sections appear for the entries that have them."""
    out = [
        _section("Site", ("site",), SiteConfig, ("name", "timezone", "latitude", "longitude")),
        _section("Limits", ("limits",), LimitsConfig, None),
        _section(
            "Tariff",
            ("planner", "tariff"),
            TariffConfig,
            ("kind", "currency", "fixed_import_per_kwh", "fixed_export_per_kwh"),
        ),
        _section(
            "Octopus product and tariff codes",
            ("planner", "tariff", "octopus"),
            OctopusConfig,
            ("product_code", "tariff_code", "export_product_code", "export_tariff_code"),
        ),
    ]
    arrays = get_path(doc, ("planner", "forecast", "arrays"))
    if isinstance(arrays, Sequence) and not isinstance(arrays, str):
        for i in range(len(arrays)):
            loc = ("planner", "forecast", "arrays", i)
            fields = ("kwp", "tilt_deg", "azimuth_deg")
            out.append(_section(f"PV array {i + 1}", loc, PvArrayConfig, fields))
    devices = get_path(doc, ("devices",))
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        for i, device in enumerate(devices):
            if not isinstance(device, Mapping):
                continue
            name = str(device.get("id", f"devices[{i}]"))
            if isinstance(device.get("ev"), Mapping):
                out.append(_section(f"EV at {name}", ("devices", i, "ev"), EvNeeds, None))
            if isinstance(device.get("battery"), Mapping):
                out.append(
                    _section(f"Battery {name}", ("devices", i, "battery"), BatteryFacts, None)
                )
    out += [
        _section("Planner", ("planner",), PlannerConfig, ("horizon_h", "step_min")),
        _section("Control", ("control",), ControlConfig, ("cycle_s", "strategy", "ev_strategy")),
    ]
    return [
        FormSection(
            s.title, tuple(replace(f, value=_shown(get_path(doc, f.loc))) for f in s.fields)
        )
        for s in out
    ]


def parse(
    fields: Sequence[FormField], form: Mapping[str, str]
) -> tuple[dict[Loc, Edit], dict[str, str]]:
    """The submitted values as edits, and a message per field that is not even a value of
    its type (the rest is for `hems.config.validate`). An empty field is removed from the
    file, so the model's default applies (or validation says it is required)."""
    edits: dict[Loc, Edit] = {}
    errors: dict[str, str] = {}
    for f in fields:
        if f.name not in form:
            continue
        raw = form[f.name].strip()
        if raw == "":
            edits[f.loc] = DELETE
            continue
        try:
            edits[f.loc] = _convert(f, raw)
        except ValueError as exc:
            errors[f.name] = str(exc)
    return edits, errors


@dataclass(frozen=True, slots=True)
class FormCheck:
    """The outcome of submitting values to the form over a file's text (nothing written).

    `problems` holds each message under its field's name (`limits.fuse_a`; "" when it names
    no field), empty when the result is valid; `checked` is None when a value was not even
    of its field's type; `changed` names the fields whose value in the file would change."""

    form: list[FormSection]
    checked: Checked | None
    problems: dict[str, list[str]]
    changed: tuple[str, ...]

    @property
    def fields(self) -> list[FormField]:
        return [f for s in self.form for f in s.fields]

    @property
    def ok(self) -> bool:
        return self.checked is not None and not self.problems


def check_form(text: str, values: Mapping[str, str], source: str = "config") -> FormCheck:
    """The form's values (as the page posts them) applied to the file's text and checked:
    `parse` per field, then `hems.config.validate` on the whole file (`apply_edits`), the
    same for the installer's page and PATCH /api/v1/config. Names that are not fields of
    the form are ignored (the caller decides). Raises ConfigErrors when the file itself is
    not a YAML mapping."""
    form = sections(load_document(text))
    fields = [f for s in form for f in s.fields]
    edits, bad = parse(fields, values)
    if bad:
        return FormCheck(form, None, {k: [v] for k, v in bad.items()}, ())
    checked = apply_edits(text, edits, source=source)
    if not checked.ok:
        return FormCheck(form, checked, problems_by_field(checked.problems), ())
    changed: tuple[str, ...] = ()
    if checked.changed:
        before, after = load_document(text), load_document(checked.new_text)
        changed = tuple(f.name for f in fields if get_path(before, f.loc) != get_path(after, f.loc))
    return FormCheck(form, checked, {}, changed)


def _convert(f: FormField, raw: str) -> Edit:
    if f.kind == "choice":
        if raw not in f.choices:
            raise ValueError(f"must be one of {', '.join(f.choices)}")
        return _literal(raw)
    if f.kind == "integer":
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise ValueError("must be a whole number")
        return int(raw)
    if f.kind == "number":
        try:
            number = int(raw) if re.fullmatch(r"[+-]?\d+", raw) else float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    return raw


def _literal(raw: str) -> Edit:
    # Literal choices are strings or ints (phases: 1 | 3, step_min: 15 | 30).
    return int(raw) if re.fullmatch(r"-?\d+", raw) else raw


def _section(
    title: str, prefix: Loc, model: type[BaseModel], names: Sequence[str] | None
) -> FormSection:
    chosen = names if names is not None else list(model.model_fields)
    return FormSection(title, tuple(_field((*prefix, n), n, model) for n in chosen))


def _field(loc: Loc, name: str, model: type[BaseModel]) -> FormField:
    info = model.model_fields[name]
    annotation = _unwrap_optional(info.annotation)
    choices: tuple[str, ...] = ()
    kind: Kind = "text"
    if get_origin(annotation) is Literal:
        kind, choices = "choice", tuple(str(a) for a in get_args(annotation))
    elif annotation is int:
        kind = "integer"
    elif annotation is float:
        kind = "number"
    lo = next((m.ge for m in info.metadata if isinstance(m, Ge)), None)
    hi = next((m.le for m in info.metadata if isinstance(m, Le)), None)
    gt = next((m.gt for m in info.metadata if isinstance(m, Gt)), None)
    lt = next((m.lt for m in info.metadata if isinstance(m, Lt)), None)
    bounds = [
        *([f"≥ {lo:g}"] if lo is not None else []),
        *([f"> {gt:g}"] if gt is not None else []),
        *([f"≤ {hi:g}"] if hi is not None else []),
        *([f"< {lt:g}"] if lt is not None else []),
    ]
    hint = "; ".join(x for x in (info.description or "", ", ".join(bounds)) if x)
    default = "" if info.default is PydanticUndefined or info.default is None else info.default
    return FormField(
        loc=loc,
        label=name,
        kind=kind,
        hint=hint,
        default=f"{default:g}" if isinstance(default, float) else str(default),
        choices=choices,
        minimum=float(lo) if lo is not None else None,
        maximum=float(hi) if hi is not None else None,
    )


def _unwrap_optional(annotation: object) -> object:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _shown(value: object) -> str:
    if value is DELETE or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
