"""Register maps checked against the vendors' documents, not against themselves.

Each shipped profile has `tests/profiles/vectors/<file>.yaml`, written by hand from the public
register document it cites: raw register words at the document's address, the value the
document says they mean, and the profile must decode them to exactly that. Rows the document
confirms only by address and type are `layout` checks; registers no readable document row was
found for are listed under `unverified` with the reason, so a gap is visible, never silent.
SunSpec-based profiles also give each register's model and point: its address must be the
model's start plus the point's offset in the SunSpec definition (pysunspec2's JSON models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sunspec2 import device as ss_device

from hems.devices.modbus.profile import shipped_profiles
from hems.devices.modbus.profile_decode import decode_all

VECTORS = Path(__file__).parent / "vectors"
DRIVERS = Path(__file__).parents[2] / "drivers"
PROFILES = shipped_profiles()
FILES = sorted(p.stem for p in DRIVERS.glob("*.yaml"))


def load(stem: str) -> dict[str, Any]:
    path = VECTORS / f"{stem}.yaml"
    assert path.exists(), f"{path}: no hand-written vectors for drivers/{stem}.yaml"
    data = yaml.safe_load(path.read_text())
    assert data.get("documents"), f"{path}: cite the vendor document(s) under 'documents'"
    return data


@pytest.mark.parametrize("stem", FILES)
def test_profile_decodes_the_documents_vectors(stem: str) -> None:
    data = load(stem)
    profile = PROFILES[data["profile"]]
    for i, vec in enumerate(data.get("vectors", [])):
        where = f"{stem} vector {i} ({vec['doc']})"
        table = vec.get("table", "holding")
        words = {int(a): [int(w) for w in ws] for a, ws in vec["words"].items()}
        flat = {a + k: w for a, ws in words.items() for k, w in enumerate(ws)}
        wanted: list[str] = []
        for name in vec["expect"]:
            if name in profile.derived:
                d = profile.derived[name]
                wanted += [*d.add, *d.subtract]
                continue
            reg = profile.registers[name]
            assert reg.table == table, f"{where}: {name} is a {reg.table} register, doc: {table}"
            assert reg.address in words, (
                f"{where}: {name} is at {reg.address} in the profile, the document says "
                f"{sorted(words)}"
            )
            assert len(words[reg.address]) == reg.width, f"{where}: {name} width"
            wanted.append(name)
        values, errors = decode_all(profile, {table: flat}, wanted)
        for name, expected in vec["expect"].items():
            assert name in values, f"{where}: {name} did not decode: {errors}"
            if isinstance(expected, str):
                assert values[name] == expected, where
            else:
                assert values[name] == pytest.approx(expected, rel=1e-6, abs=1e-6), (
                    f"{where}: {name} decodes to {values[name]}, the document means {expected}"
                )


@pytest.mark.parametrize("stem", FILES)
def test_profile_layout_matches_the_document(stem: str) -> None:
    data = load(stem)
    profile = PROFILES[data["profile"]]
    for row in data.get("layout", []):
        reg = profile.registers[row["register"]]
        where = f"{stem} layout {row['register']} ({row['doc']})"
        assert reg.address == row["address"], f"{where}: profile says {reg.address}"
        assert reg.table == row.get("table", "holding"), where
        assert reg.type == row["type"], f"{where}: profile type {reg.type}"


@pytest.mark.parametrize("stem", FILES)
def test_sunspec_addresses_follow_the_model_definitions(stem: str) -> None:
    data = load(stem)
    profile = PROFILES[data["profile"]]
    for row in data.get("sunspec", []):
        model = ss_device.Model(model_id=row["model"], data=row.get("data"))
        point: Any = model
        for part in row["point"].split("."):
            if "[" in part:
                name, index = part[:-1].split("[")
                point = point.groups[name][int(index) - 1]
            elif part in point.points:
                point = point.points[part]
        address = row["model_at"] + point.offset
        reg = profile.registers[row["register"]]
        assert reg.address == address, (
            f"{stem}: {row['register']} at {reg.address}, SunSpec {row['model']}.{row['point']}"
            f" with the model at {row['model_at']} is {address}"
        )


@pytest.mark.parametrize("stem", FILES)
def test_every_reading_register_is_checked_or_said_unverified(stem: str) -> None:
    data = load(stem)
    profile = PROFILES[data["profile"]]
    checked: set[str] = set()
    for vec in data.get("vectors", []):
        checked |= set(vec["expect"])
    checked |= {row["register"] for row in data.get("layout", [])}
    checked |= {row["register"] for row in data.get("sunspec", [])}
    unverified = data.get("unverified") or {}
    for name, why in unverified.items():
        assert name in profile.registers or name in profile.derived, f"{stem}: {name}?"
        assert isinstance(why, str) and len(why) > 10, f"{stem}: say why {name} is unverified"
    readings = [n for n, r in profile.registers.items() if r.quantity is not None]
    readings += list(profile.derived)
    missing = [n for n in readings if n not in checked and n not in unverified]
    assert not missing, f"{stem}: no vector and no 'unverified' reason for {missing}"
