"""The config layout before one-entry-per-device, and how each of its keys moves.

Until December 2026 a device's facts were spread over `planner.batteries[]`,
`planner.evs[]`, `planner.loads[]`, `control.devices{}` and `ocpp.chargers[]`. Now each
device states them once in its `devices[]` entry. `old_layout_moves` finds every old key
(so `hems check-config` names each with its line and its new place) and `migrate` rewrites
the parsed data (`hems config migrate FILE` prints it as YAML).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hems.yamllines import Loc

# Keys of an old planner.evs[] item that now sit on the charger entry itself.
_CHARGER_RATINGS = ("phases", "voltage_v", "min_current_a", "max_current_a")
# Keys of an old control.devices.<id> item and where they go now in the device's entry.
_CONTROL_KEYS = {
    "max_charge_w": ("battery", "max_charge_w"),
    "max_discharge_w": ("battery", "max_discharge_w"),
    "rated_w": (None, "rated_w"),
    "load_power_w": ("load", "power_w"),
    "deferrable": ("load", "deferrable"),
}


@dataclass(frozen=True, slots=True)
class Move:
    old: Loc  # where the key was, e.g. ("planner", "batteries", 0)
    new: str  # where it goes, in words
    problem: str | None = None  # why it cannot be moved automatically


def old_layout_moves(data: dict[str, Any]) -> list[Move]:
    """Every key in the old layout, with where it moves; empty for a current file."""
    return _migrate(copy.deepcopy(data))[1]


def migrate(data: dict[str, Any]) -> tuple[dict[str, Any], list[Move]]:
    """The same config in the current layout, and the moves made (a copy; `data` is kept)."""
    return _migrate(copy.deepcopy(data))


def _migrate(data: dict[str, Any]) -> tuple[dict[str, Any], list[Move]]:
    moves: list[Move] = []
    devices = data.get("devices")
    if not isinstance(devices, list):
        devices = []
    by_id = {d["id"]: d for d in devices if isinstance(d, dict) and isinstance(d.get("id"), str)}

    def section(name: str) -> dict[str, Any]:
        value = data.get(name)
        return value if isinstance(value, dict) else {}

    ocpp, planner, control = section("ocpp"), section("planner"), section("control")

    chargers = ocpp.pop("chargers", None)
    for i, charger in enumerate(chargers if isinstance(chargers, list) else []):
        loc: Loc = ("ocpp", "chargers", i)
        if not isinstance(charger, dict) or "id" not in charger:
            moves.append(Move(loc, "a devices[] entry of type: ocpp", "needs an id"))
            continue
        cid = charger["id"]
        if cid in by_id:
            moves.append(Move(loc, f"devices[] entry {cid!r}", "that id is already a device"))
            continue
        entry = {"type": "ocpp", **charger}
        devices.append(entry)
        by_id[cid] = entry
        moves.append(Move(loc, f"a new devices[] entry {{type: ocpp, id: {cid}, …}}"))

    for kind, key, target in (
        ("batteries", "device_id", "battery"),
        ("evs", "charger_id", "ev"),
        ("loads", "device_id", "load"),
    ):
        items = planner.pop(kind, None)
        for i, item in enumerate(items if isinstance(items, list) else []):
            loc = ("planner", kind, i)
            if not isinstance(item, dict) or item.get(key) not in by_id:
                name = item.get(key) if isinstance(item, dict) else None
                moves.append(
                    Move(loc, f"{target}: of a devices[] entry", f"no device with id {name!r}")
                )
                continue
            entry = by_id[item[key]]
            facts = {k: v for k, v in item.items() if k != key}
            if kind == "evs":
                for rating in _CHARGER_RATINGS:
                    if rating in facts:
                        value = facts.pop(rating)
                        entry.setdefault(rating, value)
            _merge(entry, target, facts)
            moves.append(Move(loc, f"devices[{item[key]}].{target}"))

    per_device = control.pop("devices", None)
    for dev_id, options in (per_device if isinstance(per_device, dict) else {}).items():
        loc = ("control", "devices", dev_id)
        if dev_id not in by_id or not isinstance(options, dict):
            moves.append(Move(loc, "a devices[] entry", f"no device with id {dev_id!r}"))
            continue
        entry = by_id[dev_id]
        replaced = []
        for k, v in options.items():
            sub, new_key = _CONTROL_KEYS.get(k, ("control", k))
            holder = entry if sub is None else entry.setdefault(sub, {})
            if not isinstance(holder, dict):
                continue
            if new_key in holder and holder[new_key] != v:
                # The control loop drove the device with this value: it is the one kept.
                replaced.append(f"{k}: {v} (planner had {holder[new_key]})")
            holder[new_key] = v
        note = f"; kept {', '.join(replaced)}" if replaced else ""
        moves.append(Move(loc, f"devices[{dev_id}] (rated_w, battery:, load:, control:){note}"))

    if devices and "devices" not in data:
        data["devices"] = devices
    return data, moves


def _merge(entry: dict[str, Any], key: str, facts: dict[str, Any]) -> None:
    current = entry.get(key)
    entry[key] = {**(current if isinstance(current, dict) else {}), **facts}
