"""The `control:` section: the documented example loads, bad values get one clear line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from hems.config import ConfigErrors, load_config

EXAMPLE = Path(__file__).with_name("control_example.yaml")


def test_example_loads() -> None:
    cfg = load_config(EXAMPLE).control_config()
    assert cfg.cycle_s == 1.0 and cfg.ev_strategy == "pv-only"
    assert cfg.device("wallbox").charger_stale == "minimum"
    assert cfg.setting("wallbox", "ev_strategy") == "min-pv"
    assert cfg.device("battery").max_charge_w == 5000
    assert cfg.setting("battery", "ramp_w_per_s") == 2000
    assert (cfg.device("immersion").load_power_w, cfg.device("immersion").phase) == (3000, 1)
    assert cfg.device("pv").rated_w == 3680
    assert cfg.device("unknown").ramp_w_per_s is None  # defaults apply
    assert cfg.shed_order[0] == "ev"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("cycle_s: 1", "cycle_s: 20", "control.cycle_s: must be 0.5..10 (line 5)"),
        ("cycle_s: 1", "cycle_s: 0.1", "control.cycle_s: must be 0.5..10 (line 5)"),
        ("shed_order: [ev,", "shed_order: [ev, ev,",
         "control.shed_order: each step may appear once (line 14)"),
        ("deadband_w: 50", "deadband_w: -5", "control.deadband_w: must be 0..10000 (line 8)"),
        ("id: wallbox", "id: Wall Box", "devices[0].id: String should match pattern"),
        ("load: {power_w: 3000", "load: {power_w: -1", "devices[3].load.power_w: must be > 0"),
        ("rated_w: 3680", "rated_w: 3680, battery: {max_charge_w: 1, max_discharge_w: 1}",
         "devices[2].battery: only for role battery (this entry is role pv)"),
        ("refresh_s: 20", "refresh_s: 20\n  fuse_amps: 3", "control.fuse_amps: unknown key"),
    ],
)  # fmt: skip
def test_bad_values_name_the_field(tmp_path: Path, old: str, new: str, problem: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(EXAMPLE.read_text().replace(old, new, 1))
    with pytest.raises(ConfigErrors) as err:
        load_config(path)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
