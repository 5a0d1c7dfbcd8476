"""Planner config: bad values give one line naming the field (through the real loader)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hems.config import ConfigErrors, load_config

BAD = """\
site: {id: demo}
planner:
  enabled: true
  step_min: 20
  tariff: {kind: octopus_agile, octopus: {tariff_code: E-1R-AGILE-24-10-01-Z}}
devices:
  - {type: ocpp, id: wallbox, ev: {default_departure: "7am"}}
  - {type: sunspec, id: bat, role: battery, host: 10.0.0.5,
     battery: {capacity_wh: 9500, max_charge_w: 3000, max_discharge_w: 3000,
               min_soc_pct: 50, max_soc_pct: 40}}
"""

GOOD = """\
site: {id: demo, timezone: Europe/London}
planner:
  enabled: true
  step_min: 15
  tariff:
    kind: tou
    bands: [{start: "00:30", end: "04:30", import_per_kwh: 0.07}]
  forecast: {arrays: [{kwp: 4.2, tilt_deg: 35, azimuth_deg: 180}]}
ocpp: {enabled: true, allow_insecure_chargers: true}
devices:
  - {type: ocpp, id: wallbox, phases: 3, min_current_a: 6, max_current_a: 16, ev: {}}
"""


def test_bad_planner_config_names_each_field(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(BAD)
    with pytest.raises(ConfigErrors) as exc:
        load_config(f)
    problems = exc.value.problems
    assert "planner.step_min: Input should be 15 or 30 (line 4)" in problems
    assert any(p.startswith("planner.tariff.octopus.tariff_code:") for p in problems)
    assert any(
        p.startswith("devices[1].battery.min_soc_pct: must be <= max_soc_pct") for p in problems
    ), problems
    assert (
        "devices[0].ev.default_departure: must be a time HH:MM (24 h), got '7am' (line 7)"
        in problems
    ), problems


def test_good_planner_config_derives_ev_powers(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(GOOD)
    cfg = load_config(f).planner_config()
    assert cfg.evs[0].min_power_w == 6 * 3 * 230 and cfg.evs[0].max_power_w == 16 * 3 * 230
    assert cfg.horizon_h == 48 and cfg.tariff.bands[0].import_per_kwh == 0.07
