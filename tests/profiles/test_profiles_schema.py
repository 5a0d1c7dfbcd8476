"""Profiles: every shipped one loads; bad ones are refused with file, path and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from hems.config import ConfigErrors, load_config
from hems.core.capabilities import BatteryMode
from hems.devices.modbus.profile import ProfileError, load_profile, parse_profile, shipped_profiles
from hems.devices.modbus.profile_config import ProfileDeviceConfig

REQUIRED = {
    "eastron-sdm630",
    "eastron-sdm120",
    "eastron-sdm72",
    "huawei-sun2000",
    "sungrow-sh",
    "goodwe-et",
    "solaredge-storage",
    "fronius-gen24",
    "sma-storage",
    "victron-gx",
    "growatt-sph",
    "solis-hybrid",
    "foxess-h1",
}

GOOD = """\
family: acme-hybrid
products: [{brand: Acme, models: [H5]}]
capabilities: [battery, battery-control]
battery_modes: [normal]
registers:
  soc: {table: input, address: 100, type: uint16, scale: 0.1, quantity: soc_pct, role: battery}
  mode: {address: 200, type: uint16, writable: true}
modes:
  normal: [{register: mode, value: 0}]
sources: ["Acme Modbus map v1"]
"""


def test_every_shipped_profile_loads_and_states_its_modes() -> None:
    profiles = shipped_profiles()
    assert REQUIRED <= set(profiles)
    for family, p in profiles.items():
        assert p.sources, family
        assert p.caveats, family
        assert all(c.link.startswith("https://") for c in p.caveats), family
        assert set(p.battery_modes) == set(p.modes), family
        assert all(isinstance(m, BatteryMode) for m in p.battery_modes)
        assert p.roles(), family


def test_shipped_files_are_in_the_package_dir(repo_root: Path) -> None:
    files = sorted((repo_root / "drivers").glob("*.yaml"))
    assert len(files) == len(shipped_profiles())
    assert (repo_root / "drivers" / "__init__.py").exists()
    for f in files:
        assert load_profile(f).family in shipped_profiles()


def _bad(text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        parse_profile(textwrap.dedent(text), "drivers/bad.yaml")
    return info.value.problems


def test_unknown_type_names_file_path_and_line() -> None:
    problems = _bad(GOOD.replace("type: uint16, scale: 0.1", "type: int17, scale: 0.1"))
    assert problems == [
        "drivers/bad.yaml: registers.soc.type: unknown type 'int17'; expected one of "
        "int16, uint16, int32, uint32, int64, uint64, float32, string (line 6)"
    ]


def test_overlapping_registers_are_refused() -> None:
    text = GOOD.replace(
        "  mode: {address: 200",
        "  energy: {table: input, address: 99, type: int32}\n  mode: {address: 200",
    )
    (problem,) = _bad(text)
    assert problem.startswith("drivers/bad.yaml: registers.soc.address: input 100..100 overlaps")
    assert "registers.energy (99..100)" in problem and problem.endswith("(line 6)")


def test_missing_scale_register_and_impossible_address() -> None:
    text = GOOD.replace("scale: 0.1", "scale_register: soc_sf").replace(
        "address: 200, type: uint16", "address: 65535, type: uint32"
    )
    problems = _bad(text)
    assert any(
        p.startswith("drivers/bad.yaml: registers.soc.scale_register: scale register 'soc_sf'")
        and p.endswith("(line 6)")
        for p in problems
    ), problems
    assert any(
        "registers.mode.address: uint32 at 65535 ends at 65536, beyond 65535" in p for p in problems
    ), problems


def test_mode_steps_must_be_declared_and_writable() -> None:
    problems = _bad(
        GOOD.replace("writable: true", "writable: false").replace(
            "battery_modes: [normal]", "battery_modes: [normal, idle]"
        )
    )
    assert any(
        "modes.normal[0].register: register 'mode' is not marked writable" in p for p in problems
    ), problems
    assert any("battery_modes: mode idle is listed but has no write steps" in p for p in problems)


def test_unknown_key_and_bad_yaml() -> None:
    assert _bad(GOOD.replace("family:", "famly: x\nfamily:"))[0].startswith(
        "drivers/bad.yaml: famly: unknown key (line 1)"
    )
    assert "not valid YAML" in _bad("family: [unclosed\n")[0]


def test_a_mode_the_device_lacks_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "hems.yaml"
    cfg.write_text(
        textwrap.dedent(
            """\
            site: {id: test}
            devices:
              - type: modbus-profile
                id: growatt
                role: battery
                profile: growatt-sph
                host: 127.0.0.1
                battery_modes: [force-charge]
            """
        )
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    (problem,) = info.value.problems
    assert problem == (
        "devices[0].battery_modes: growatt-sph cannot do force-charge (it offers: none) (line 8)"
    )


def test_profile_config_checks_profile_and_role() -> None:
    with pytest.raises(ValidationError, match="unknown profile 'acme'"):
        ProfileDeviceConfig.model_validate(
            {"type": "modbus-profile", "id": "x", "role": "pv", "profile": "acme", "host": "h"}
        )
    with pytest.raises(ValidationError, match="has no pv side"):
        ProfileDeviceConfig.model_validate(
            {
                "type": "modbus-profile",
                "id": "x",
                "role": "pv",
                "profile": "eastron-sdm630",
                "host": "h",
            }
        )
    ok = ProfileDeviceConfig.model_validate(
        {
            "type": "modbus-profile",
            "id": "x",
            "role": "battery",
            "profile": "sungrow-sh",
            "host": "h",
            "battery_modes": ["normal", "force-charge"],
        }
    )
    assert ok.modes == {BatteryMode.NORMAL, BatteryMode.FORCE_CHARGE}
    assert ok.device_unit_id == 1


def test_shipped_json_schema_is_current(repo_root: Path) -> None:
    import json

    from hems.devices.modbus.profile import profile_schema

    shipped = json.loads((repo_root / "drivers" / "profile.schema.json").read_text())
    assert shipped == profile_schema(), "regenerate drivers/profile.schema.json"
