import subprocess
import sys
from pathlib import Path

import pytest

from hems.config import ConfigErrors, load_config

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
site:
  id: home
devices:
  - {type: sunspec, id: inv, role: pv, host: 10.0.0.5}
  - type: sunspec
    id: meter
    role: grid
    host: 10.0.0.6
    port: 1502
limits:
  fuse_a: 80
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hems.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    return info.value.problems


def test_good_file_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.site.id == "home"
    assert [d.id for d in cfg.devices] == ["inv", "meter"]
    assert cfg.devices[1].port == 1502 and cfg.devices[0].port == 502
    assert cfg.limits.import_limit_w == 80 * 230
    assert cfg.storage.batch_interval_s == 5
    assert cfg.web.port == 8080


def test_shipped_demo_config_is_valid() -> None:
    cfg = load_config(REPO / "config" / "demo.yaml")
    assert cfg.devices


def test_each_problem_names_field_reason_and_line(tmp_path: Path) -> None:
    text = GOOD + "  colour: red\nweb:\n  port: 0\n"
    text = text.replace("port: 1502", "port: 70000")
    found = problems(write(tmp_path, text))
    assert "devices[1].port: must be 1..65535 (line 9)" in found
    assert "limits.colour: unknown key (line 12)" in found
    assert "web.port: must be 1..65535 (line 14)" in found


def test_unknown_device_type_and_missing_fields(tmp_path: Path) -> None:
    text = "site:\n  id: home\ndevices:\n  - {type: toaster, id: t}\n  - {type: sunspec, id: m}\n"
    found = problems(write(tmp_path, text))
    assert any(p.startswith("devices[0]: unknown type 'toaster'") for p in found)
    assert "devices[1].role: is required (line 5)" in found
    text = "site:\n  id: home\ndevices:\n  - type: sunspec\n    id: m\n    role: grid\n"
    found = problems(write(tmp_path, text))
    assert found == ["devices[0].host: required when transport is tcp (line 4)"]


def test_duplicate_device_ids_and_missing_site(tmp_path: Path) -> None:
    text = GOOD.replace("id: meter", "id: inv")
    assert any("'inv' is used twice" in p for p in problems(write(tmp_path, text)))
    assert problems(write(tmp_path, "devices: []\n")) == ["site: is required (line 1)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("site: [\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    (found,) = problems(write(tmp_path, text))
    assert expected in found


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such file"]


def test_secrets_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "host.secret").write_text("10.1.1.1\n")
    monkeypatch.setenv("HEMS_TEST_HOST", "192.0.2.7")
    text = GOOD.replace("host: 10.0.0.5", "host: '${env:HEMS_TEST_HOST}'").replace(
        "host: 10.0.0.6", "host: ${file:host.secret}"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.devices[0].host == "192.0.2.7"
    assert cfg.devices[1].host == "10.1.1.1"
    monkeypatch.delenv("HEMS_TEST_HOST")
    found = problems(write(tmp_path, text))
    assert "devices[0].host: environment variable HEMS_TEST_HOST is not set (line 4)" in found


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    ok = subprocess.run(
        [sys.executable, "-m", "hems.cli", "check-config", str(good)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    good.write_text(GOOD.replace("port: 1502", "port: 99999"))
    bad = subprocess.run(
        [sys.executable, "-m", "hems.cli", "check-config", str(good)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["devices[1].port: must be 1..65535 (line 9)"]


def test_battery_and_charger_facts_are_stated_once(tmp_path: Path) -> None:
    text = (
        GOOD
        + """\
ocpp:
  enabled: true
  allow_insecure_chargers: true
  chargers: [{id: wallbox, phases: 1, min_current_a: 8, max_current_a: 16}]
planner:
  enabled: true
  batteries: [{device_id: house, capacity_wh: 9500, max_charge_w: 3600, max_discharge_w: 3000}]
  evs: [{charger_id: wallbox, max_current_a: 10}]
control:
  enabled: true
  devices:
    other: {max_charge_w: 1000, max_discharge_w: 1000}
    house: {max_discharge_w: 2500}
"""
    )
    cfg = load_config(write(tmp_path, text))
    house = cfg.control.devices["house"]
    assert house.max_charge_w == 3600  # from planner.batteries
    assert house.max_discharge_w == 2500  # an explicit value wins
    ev = cfg.planner.evs[0]
    assert (ev.phases, ev.min_current_a, ev.max_current_a) == (1, 8, 10)  # max set explicitly
    assert cfg.control.devices["other"].max_charge_w == 1000


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b'site:\n  id: a\n  name: "\xff\xfe"\n',
            "hems.yaml: not UTF-8 text (bad byte at offset 23)",
        ),
        (
            b"site:\n  id: a\n  timezone: Europe\n",
            "site.timezone: unknown time zone 'Europe' (line 3)",
        ),
        (
            b"site:\n  id: a\n  timezone: " + b"A" * 300 + b"\n",
            "site.timezone: unknown time zone '" + "A" * 80 + "': not an IANA name like "
            "Europe/London (line 3)",
        ),
        (
            b"site:\n  id: a\nx: &a [*a]\n",
            "hems.yaml: not valid YAML: an alias refers to itself or nesting is too deep",
        ),
    ],
    ids=["not-utf8", "zone-is-a-directory", "zone-300-chars", "recursive-alias"],
)
def test_check_config_names_hostile_files_without_a_traceback(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "hems.yaml"
    path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "hems.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln.replace(str(tmp_path) + "/", "") for ln in result.stderr.strip().splitlines()]
    assert lines == [expected]
