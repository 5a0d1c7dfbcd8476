"""PV and battery behind one SunSpec inverter (a hybrid): which points mean what. Pure.

A hybrid's AC output (101/102/103/111-113 `W`, or 701 `W`) is PV + battery discharge -
battery charge, so it is neither the PV figure nor the battery's. The split:

* PV power = the sum of `DCW` over model 160's PV modules (MPPT trackers). Modules whose
  `IDStr` names storage (`StCha`/`StDisCha`, as Fronius labels them, or "battery",
  "storage") are the battery's. A module with no `IDStr` cannot be classified: then there
  is no PV figure. No 160 at all: no PV figure either (never the AC output, never a guess).
* battery power (+ = charging) from, in this order: 802 `W` (the battery's own DC power,
  + = discharging in SunSpec), 160's storage modules (StCha - StDisCha), or, only when
  nothing else is there, PV - AC output (derived: it ignores conversion losses and says so).
* the AC output stays what it is, reported beside them.

A unit is a hybrid when it has an inverter model and a storage model (124, 713, 802) and the
config does not say otherwise (`hybrid: false` = an AC-coupled battery inverter, whose AC
output is the battery's). Every figure lists the raw points it came from (`Term`), so
`hems scan` can print `103.W = 4321 W → inverter AC output`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hems.devices.modbus.sunspec import INVERTER_MODELS, ModelData

STORAGE_MODELS = (802, 713, 124)
MPPT_MODEL = 160
# IDStr words (lower case) that mark a 160 module as the battery's; first match wins.
_CHARGE_WORDS = ("stcha", "charge")
_DISCHARGE_WORDS = ("stdischa", "discharge")
_STORAGE_WORDS = ("bat", "stor")


@dataclass(frozen=True, slots=True)
class Term:
    """One raw point and what hems made of it."""

    point: str  # "103.W", "160.module[1].DCW"
    value: float | None  # scaled, in `unit`; None = not implemented or bad
    unit: str
    meaning: str  # "inverter AC output", "PV", "battery discharge (DC)", ...

    def line(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.10g} {self.unit}"
        return f"{self.point} = {shown} → {self.meaning}"


@dataclass(slots=True)
class HybridSplit:
    ac_w: float | None = None  # inverter AC output, + = delivering to the house
    pv_w: float | None = None  # + = producing
    pv_energy_wh: float | None = None  # sum of the PV modules' DCWH
    battery_w: float | None = None  # + = charging
    battery_source: str | None = None  # where battery_w came from
    terms: list[Term] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a figure is missing or derived


def is_hybrid(model_ids: list[int] | set[int], hybrid: bool | None) -> bool:
    """True if PV and battery may both sit behind this unit's AC output."""
    if hybrid is not None:
        return hybrid
    has_inverter = any(m in model_ids for m in INVERTER_MODELS)
    return has_inverter and any(m in model_ids for m in STORAGE_MODELS)


def module_kind(id_str: object) -> str | None:
    """'pv', 'charge', 'discharge' or 'storage' from a 160 module's IDStr; None = unknown."""
    if not isinstance(id_str, str) or not id_str.strip():
        return None
    text = id_str.strip().lower()
    if any(w in text for w in _DISCHARGE_WORDS):  # before "charge": "discharge" contains it
        return "discharge"
    if any(w in text for w in _CHARGE_WORDS):
        return "charge"
    if any(w in text for w in _STORAGE_WORDS):
        return "storage"
    return "pv"


def split_hybrid(models: Mapping[int, ModelData]) -> HybridSplit:
    """PV, battery and AC output of a hybrid from its decoded models."""
    out = HybridSplit()
    inv = next((models[m] for m in INVERTER_MODELS if m in models), None)
    if inv is not None:
        out.ac_w = inv.number("W")
        out.terms.append(Term(f"{inv.model_id}.W", out.ac_w, "W", "inverter AC output"))
    _pv_from_160(models.get(MPPT_MODEL), out)
    _battery(models, out)
    return out


def _pv_from_160(mppt: ModelData | None, out: HybridSplit) -> None:
    if mppt is None:
        out.notes.append(
            "hybrid without model 160 (MPPT): PV cannot be told from the battery in the AC "
            "output, so no PV figure"
        )
        return
    count = int(mppt.number("N") or 0)
    pv_w = 0.0
    pv_wh: float | None = 0.0
    pv_modules = 0
    charge: list[float | None] = []
    discharge: list[float | None] = []
    for i in range(1, count + 1):
        prefix = f"module[{i}]."
        id_str = mppt.get(prefix + "IDStr")
        kind = module_kind(id_str)
        dcw = mppt.number(prefix + "DCW")
        label = f"160.module[{i}].DCW"
        if kind is None:
            out.terms.append(Term(label, dcw, "W", "unclassified (no IDStr)"))
            out.notes.append(
                f"160 module {i} has no IDStr: cannot tell PV from storage, so no PV figure"
            )
            pv_modules = -1
            continue
        meaning = {
            "pv": f"PV ({id_str})",
            "charge": f"battery charge, DC ({id_str})",
            "discharge": f"battery discharge, DC ({id_str})",
            "storage": f"storage, direction unknown ({id_str})",
        }[kind]
        out.terms.append(Term(label, dcw, "W", meaning))
        if kind == "charge":
            charge.append(dcw)
        elif kind == "discharge":
            discharge.append(dcw)
        elif kind == "pv":
            if pv_modules >= 0:
                pv_modules += 1
            if dcw is None:
                out.notes.append(f"160 module {i} ({id_str}) DCW not available: no PV figure")
                pv_modules = -1
                continue
            pv_w += dcw
            wh = mppt.number(prefix + "DCWH")
            pv_wh = None if wh is None or pv_wh is None else pv_wh + wh
    if pv_modules > 0:
        out.pv_w = pv_w
        out.pv_energy_wh = pv_wh
    elif pv_modules == 0:
        out.notes.append("model 160 lists no PV module: no PV figure")
    if charge and discharge and all(v is not None for v in charge + discharge):
        out.battery_w = sum(v for v in charge if v is not None) - sum(
            v for v in discharge if v is not None
        )
        out.battery_source = "160 storage modules (charge - discharge, DC)"


def _battery(models: Mapping[int, ModelData], out: HybridSplit) -> None:
    bat = models.get(802)
    w802 = None if bat is None else bat.number("W")
    if bat is not None:
        out.terms.append(Term("802.W", w802, "W", "battery power, DC (+ = discharging)"))
    if w802 is not None:
        out.battery_w = -w802
        out.battery_source = "802.W"
        return
    if out.battery_w is not None:  # from 160's storage modules
        return
    if out.pv_w is not None and out.ac_w is not None:
        out.battery_w = out.pv_w - out.ac_w
        out.battery_source = "PV - AC output (derived)"
        out.notes.append(
            "battery power derived as PV (160) minus AC output: no 802 W and no 160 storage "
            "modules; conversion losses are counted as battery power"
        )
        return
    out.notes.append("battery power unknown: no 802 W, no 160 storage modules, no PV figure")
