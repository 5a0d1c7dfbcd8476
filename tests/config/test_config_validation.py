import subprocess
import sys
from pathlib import Path

import pytest

from hems.config import ConfigErrors, load_config
from hems.core.assets import DeviceRatings

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
    assert cfg.storage.batch_interval_s == 300  # issue 16: the SD-card budget
    assert cfg.storage.raw_readings == "latest"
    assert cfg.web.port == 8080


def test_shipped_demo_config_is_valid() -> None:
    cfg = load_config(REPO / "config" / "demo.yaml")
    assert cfg.devices


def test_shipped_pi_example_is_valid_and_serves_the_lan_over_tls(tmp_path: Path) -> None:
    # As installed: the config in a folder with its credentials/ beside it.
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "ocpp-wallbox").write_text("0123456789abcdef0123\n")
    example = tmp_path / "hems.yaml"
    example.write_text((REPO / "config" / "pi-gb-agile.yaml").read_text())
    cfg = load_config(example)
    assert cfg.web.host == "0.0.0.0" and cfg.web.tls is not None
    charger = cfg.ocpp_config().charger("WALLBOX-1")
    assert charger is not None and charger.password is not None
    assert [b.device_id for b in cfg.planner_config().batteries] == ["battery"]


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


def test_one_entry_states_a_device_for_every_stage(tmp_path: Path) -> None:
    text = (
        GOOD.replace(
            "  - {type: sunspec, id: inv, role: pv, host: 10.0.0.5}\n",
            """\
  - {type: sunspec, id: inv, role: pv, host: 10.0.0.5, rated_w: 4000}
  - type: sunspec
    id: house
    role: battery
    host: 10.0.0.5
    unit_id: 2
    battery: {capacity_wh: 9500, max_charge_w: 3600, max_discharge_w: 2500}
    control: {ramp_w_per_s: 2000, battery_stale: self-consumption}
  - type: ocpp
    id: wallbox
    phases: 1
    min_current_a: 8
    max_current_a: 16
    ev: {default_departure: "06:30", target_energy_wh: 12000}
""",
        )
        + """\
ocpp: {enabled: true, allow_insecure_chargers: true}
planner: {enabled: true}
control: {enabled: true}
"""
    )
    cfg = load_config(write(tmp_path, text))
    control = cfg.control_config()
    house = control.device("house")
    assert (house.max_charge_w, house.max_discharge_w) == (3600, 2500)
    assert control.setting("house", "ramp_w_per_s") == 2000
    assert control.setting("house", "battery_stale") == "self-consumption"
    assert control.setting("inv", "ramp_w_per_s") == control.ramp_w_per_s  # section default
    assert control.device("inv").rated_w == 4000
    planner = cfg.planner_config()
    assert [(b.device_id, b.capacity_wh, b.max_discharge_w) for b in planner.batteries] == [
        ("house", 9500, 2500)
    ]
    ev = planner.evs[0]  # the charger's own ratings, stated once on its entry
    assert (ev.charger_id, ev.phases, ev.min_current_a, ev.max_current_a) == ("wallbox", 1, 8, 16)
    assert (ev.default_departure, ev.target_energy_wh) == ("06:30", 12000)
    assert [c.id for c in cfg.ocpp_config().chargers] == ["wallbox"]
    assert cfg.planner.batteries == ()  # the file's planner section holds policy only
    # The ratings the uplink describes the site with come from the same entries.
    assert cfg.device_ratings() == {
        "inv": DeviceRatings(rated_w=4000),
        "house": DeviceRatings(max_charge_w=3600, max_discharge_w=2500, capacity_wh=9500),
        "wallbox": DeviceRatings(max_power_w=16 * 230 * 1),  # max_current_a × voltage_v × phases
    }  # the meter states none


OLD_LAYOUT = """\
site:
  id: home
devices:
  - {type: sunspec, id: house, role: battery, host: 10.0.0.5}
  - {type: sunspec, id: inv, role: pv, host: 10.0.0.5, unit_id: 2}
ocpp:
  enabled: true
  allow_insecure_chargers: true
  chargers: [{id: wallbox, phases: 1}]
planner:
  enabled: true
  batteries: [{device_id: house, capacity_wh: 9500, max_charge_w: 3600, max_discharge_w: 3000}]
  evs: [{charger_id: wallbox, max_current_a: 10, target_energy_wh: 15000}]
  loads: [{device_id: boiler, power_w: 3000, run_time_min: 60}]
control:
  enabled: true
  devices:
    house: {max_discharge_w: 2500, ramp_w_per_s: 1000}
    inv: {rated_w: 4000}
"""


def test_a_load_entry_states_its_power_as_its_rating(tmp_path: Path) -> None:
    text = GOOD.replace(
        "limits:",
        "  - {type: sunspec, id: heater, role: load, host: 10.0.0.7, load: {power_w: 3000}}\n"
        "limits:",
    )
    assert load_config(write(tmp_path, text)).device_ratings() == {
        "heater": DeviceRatings(load_power_w=3000)
    }


def test_a_file_in_the_old_layout_is_refused_naming_each_key_and_where_it_goes(
    tmp_path: Path,
) -> None:
    found = problems(write(tmp_path, OLD_LAYOUT))
    assert found[0].endswith("`hems config migrate FILE` prints the file rewritten):")
    assert found[1:] == [
        "ocpp.chargers[0]: move to a new devices[] entry {type: ocpp, id: wallbox, …} (line 9)",
        "planner.batteries[0]: move to devices[house].battery (line 12)",
        "planner.evs[0]: move to devices[wallbox].ev (line 13)",
        "planner.loads[0]: cannot move automatically: no device with id 'boiler' (line 14)",
        "control.devices.house: move to devices[house] (rated_w, battery:, load:, control:);"
        " kept max_discharge_w: 2500 (planner had 3000) (line 18)",
        "control.devices.inv: move to devices[inv] (rated_w, battery:, load:, control:) (line 19)",
    ]


def test_config_migrate_rewrites_the_old_layout_into_a_valid_file(tmp_path: Path) -> None:
    old = write(tmp_path, OLD_LAYOUT.replace("  loads: [{device_id: boiler, power_w: 3000, "
                                             "run_time_min: 60}]\n", ""))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "hems.cli", "config", "migrate", str(old)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    new = tmp_path / "new.yaml"
    new.write_text(out.stdout)
    cfg = load_config(new)
    house = cfg.control_config().device("house")
    # The value the control loop drove the device with is the one kept.
    assert (house.max_charge_w, house.max_discharge_w) == (3600, 2500)
    assert cfg.control_config().setting("house", "ramp_w_per_s") == 1000
    assert cfg.control_config().device("inv").rated_w == 4000
    ev = cfg.planner_config().evs[0]
    assert (ev.charger_id, ev.phases, ev.max_current_a, ev.target_energy_wh) == (
        "wallbox",
        1,
        10,
        15000,
    )
    assert "moved" in out.stderr  # what was moved is said on stderr, the file on stdout


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
