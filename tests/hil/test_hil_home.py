"""Physics of the simulated home: balance, battery, PV, curtailment, loads, determinism."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hems.core.capabilities import BatteryMode
from hil.home import Home, HomeConfig, clear_sky_ghi_w_per_m2, solar_elevation_deg

MIDNIGHT = datetime(2026, 6, 21, 0, 0, tzinfo=UTC)
CLEAR = {"cloudiness": 0.0, "cloud_transients_per_h": 0.0}


def run(home: Home, start: datetime, hours: float, dt_s: float):
    t = start
    states = []
    for _ in range(int(hours * 3600 / dt_s)):
        t += timedelta(seconds=dt_s)
        states.append(home.step(t, dt_s))
    return states


@pytest.mark.parametrize("phases", [1, 3])
def test_hil_energy_balance_holds_every_step_and_in_the_registers(phases: int) -> None:
    cfg = HomeConfig(seed=3, phases=phases)
    home = Home(cfg, start=MIDNIGHT)
    home.set_external_load_w("ev", 0.0)
    grid_wh = 0.0
    t = MIDNIGHT
    for i in range(24 * 360):  # a day at 10 s
        t += timedelta(seconds=10)
        if i == 8 * 360:
            home.kettle()
            home.set_external_load_w("ev", 7000.0)
        if i == 9 * 360:
            home.remove_external_load("ev")
        s = home.step(t, 10.0)
        assert s.grid_w == pytest.approx(s.load_w + s.external_w + s.battery_w - s.pv_w, abs=1e-6)
        assert sum(s.grid_phase_w) == pytest.approx(s.grid_w, abs=1e-6)
        grid_wh += s.grid_w * 10 / 3600
    imported_wh = s.import_wh - cfg.initial_import_wh
    exported_wh = s.export_wh - cfg.initial_export_wh
    assert imported_wh - exported_wh == pytest.approx(grid_wh, rel=1e-9, abs=1e-6)
    assert imported_wh > 0 and exported_wh > 0  # a June day both imports and exports
    assert sum(s.import_phase_wh) == pytest.approx(s.import_wh)


def test_hil_soc_stays_within_bounds_and_efficiency_applies() -> None:
    cfg = HomeConfig(seed=1, battery_initial_soc_pct=50.0)
    home = Home(cfg, start=MIDNIGHT)
    home.set_battery_setpoint_w(2000.0)  # charge 2 kW for 1 h: 2 kWh AC in
    s = run(home, MIDNIGHT, 1.0, 30.0)[-1]
    assert s.battery_charge_wh - cfg.initial_battery_charge_wh == pytest.approx(2000.0)
    stored_wh = 2000.0 * cfg.battery_charge_efficiency
    assert s.soc_pct == pytest.approx(50.0 + 100 * stored_wh / cfg.battery_capacity_wh)
    # Discharge 1 kWh AC: takes 1/eta_d out of the cells.
    soc0 = s.soc_pct
    home.set_battery_setpoint_w(-1000.0)
    s = run(home, s.at, 1.0, 30.0)[-1]
    assert s.battery_discharge_wh - cfg.initial_battery_discharge_wh == pytest.approx(1000.0)
    taken_wh = 1000.0 / cfg.battery_discharge_efficiency
    assert s.soc_pct == pytest.approx(soc0 - 100 * taken_wh / cfg.battery_capacity_wh)
    # Forced beyond the bounds: stops exactly at max, then exactly at min, never past them.
    home.set_battery_setpoint_w(5000.0)
    states = run(home, s.at, 4.0, 60.0)
    assert max(x.soc_pct for x in states) == pytest.approx(cfg.battery_soc_max_pct)
    assert states[-1].battery_w == 0.0
    home.set_battery_setpoint_w(-9000.0)  # above the 5 kW limit: clamped
    states = run(home, states[-1].at, 4.0, 60.0)
    assert min(x.battery_w for x in states) >= -cfg.battery_max_discharge_w
    assert min(x.soc_pct for x in states) == pytest.approx(cfg.battery_soc_min_pct)
    assert all(cfg.battery_soc_min_pct - 1e-9 <= x.soc_pct <= 100 + 1e-9 for x in states)


def test_hil_self_consumption_covers_load_down_to_the_reserve() -> None:
    cfg = HomeConfig(seed=2, battery_initial_soc_pct=12.0, battery_reserve_pct=10.0)
    home = Home(cfg, start=MIDNIGHT)
    states = run(home, MIDNIGHT, 3.0, 10.0)  # night: no PV
    assert states[5].battery_w < 0 and abs(states[5].grid_w) < 50  # covering the base load
    assert states[-1].soc_pct == pytest.approx(10.0, abs=0.01)  # stopped at the reserve
    assert states[-1].grid_w == pytest.approx(states[-1].load_w)  # and imports from then on


def test_hil_pv_is_zero_at_night_and_peaks_near_solar_noon() -> None:
    home = Home(HomeConfig(**CLEAR), start=MIDNIGHT)
    at = [MIDNIGHT + timedelta(minutes=m) for m in range(24 * 60)]
    pv = [home.pv_available_w(t) for t in at]
    assert pv[0] == 0.0 and pv[60 * 2] == 0.0 and pv[60 * 23] == 0.0
    peak = at[max(range(len(pv)), key=pv.__getitem__)]
    # London, 21 June: solar noon is about 12:02 UTC (EoT -1.7 min, longitude -0.13 deg).
    assert abs((peak - MIDNIGHT.replace(hour=12, minute=2)).total_seconds()) <= 10 * 60
    assert 2500 < max(pv) < 4000  # 4 kWp, PR 0.85, Haurwitz GHI ~ 900 W/m2
    winter = datetime(2026, 12, 21, 12, 2, tzinfo=UTC)
    assert home.pv_available_w(winter) < 0.4 * max(pv)


def test_hil_solar_geometry_matches_known_values() -> None:
    # Equinox noon on the equator at Greenwich: the sun is near the zenith.
    assert solar_elevation_deg(datetime(2026, 3, 20, 12, 7, tzinfo=UTC), 0.0, 0.0) > 88.0
    # London midsummer noon: 90 - 51.5 + 23.44 = 61.9 deg.
    assert solar_elevation_deg(datetime(2026, 6, 21, 12, 2, tzinfo=UTC), 51.5, -0.13) == (
        pytest.approx(61.9, abs=0.3)
    )
    assert clear_sky_ghi_w_per_m2(-5.0) == 0.0
    assert clear_sky_ghi_w_per_m2(90.0) == pytest.approx(1098 * 0.94272, rel=1e-3)
    with pytest.raises(ValueError, match="timezone-aware"):
        solar_elevation_deg(datetime(2026, 6, 21, 12), 51.5, 0.0)


def test_hil_curtailment_caps_pv_and_lifts_again() -> None:
    cfg = HomeConfig(**CLEAR)
    home = Home(cfg, start=MIDNIGHT.replace(hour=11))
    s = run(home, MIDNIGHT.replace(hour=11), 0.1, 10.0)[-1]
    assert s.pv_w > 2000
    home.set_pv_limit_pct(25.0)
    s = home.step(s.at + timedelta(seconds=10), 10.0)
    assert s.pv_w == pytest.approx(0.25 * cfg.pv_inverter_max_w)
    assert s.pv_available_w > 2000 and s.pv_limit_pct == 25.0
    home.set_pv_limit_pct(None)
    s = home.step(s.at + timedelta(seconds=10), 10.0)
    assert s.pv_w > 2000
    with pytest.raises(ValueError, match="limit_pct"):
        home.set_pv_limit_pct(120.0)


def test_hil_inverter_clips_at_wmax() -> None:
    cfg = HomeConfig(pv_kwp=8.0, pv_inverter_max_w=3680.0, **CLEAR)
    home = Home(cfg, start=MIDNIGHT.replace(hour=12))
    s = home.step(MIDNIGHT.replace(hour=12, second=10), 10.0)
    assert s.pv_available_w > 3680 and s.pv_w == pytest.approx(3680.0)


def test_hil_same_seed_same_day_whatever_the_step_length() -> None:
    a = Home(HomeConfig(seed=11), start=MIDNIGHT)
    b = Home(HomeConfig(seed=11), start=MIDNIGHT)
    c = Home(HomeConfig(seed=12), start=MIDNIGHT)
    t = MIDNIGHT + timedelta(hours=10)
    assert a.pv_available_w(t) == b.pv_available_w(t)
    assert a.household_load_w(t) == b.household_load_w(t)
    assert (a.pv_available_w(t), a.household_load_w(t)) != (
        c.pv_available_w(t),
        c.household_load_w(t),
    )
    sa = run(a, MIDNIGHT, 12, 10.0)[-1]
    sb = run(b, MIDNIGHT, 12, 60.0)[-1]  # 60 s steps are split into 10 s substeps
    assert sa.pv_energy_wh == pytest.approx(sb.pv_energy_wh, rel=1e-9)
    assert sa.import_wh - sa.export_wh == pytest.approx(sb.import_wh - sb.export_wh, abs=30)


def test_hil_adhoc_loads_add_exact_energy_and_expire() -> None:
    cfg = HomeConfig(seed=5)
    home = Home(cfg, start=MIDNIGHT)
    ref = Home(cfg, start=MIDNIGHT)
    home.kettle(duration_s=180.0)
    load_wh = ref_wh = 0.0
    for _ in range(60):
        t = (home.now or MIDNIGHT) + timedelta(seconds=7)
        load_wh += home.step(t, 7.0).load_w * 7 / 3600
        ref_wh += ref.step(t, 7.0).load_w * 7 / 3600
    assert load_wh - ref_wh == pytest.approx(3000 * 180 / 3600, rel=1e-6)
    assert "kettle" not in home.active_loads
    home.step_load(10_000.0, duration_s=60.0)
    s = home.step(home.now + timedelta(seconds=10), 10.0)
    assert s.load_w > 10_000
    with pytest.raises(ValueError, match="load oven: power_w"):
        home.add_load("oven", -5.0)


def test_hil_external_load_enters_the_balance_per_phase() -> None:
    cfg = HomeConfig(seed=4, phases=3, battery_capacity_wh=0.0, **CLEAR)
    home = Home(cfg, start=MIDNIGHT)
    home.set_external_load_w("ev", 7400.0, phase_split=(1, 0, 0))
    s = home.step(MIDNIGHT + timedelta(seconds=10), 10.0)
    assert s.external_w == pytest.approx(7400.0)
    base = [cfg.load_phase_weights[i] * (s.load_w) for i in range(3)]
    assert s.grid_phase_w[0] == pytest.approx(base[0] + 7400.0)
    assert s.grid_phase_w[1] == pytest.approx(base[1])
    assert s.current_phase_a[0] > 32.0
    with pytest.raises(ValueError, match="phase_split"):
        home.set_external_load_w("ev", 7400.0, phase_split=(1, 0))


def test_hil_battery_modes_map_to_windows() -> None:
    cfg = HomeConfig(seed=6, **CLEAR)
    home = Home(cfg, start=MIDNIGHT)
    home.set_battery_mode(BatteryMode.FORCE_CHARGE, 3000.0)
    s = home.step(MIDNIGHT + timedelta(seconds=10), 10.0)
    assert s.battery_w == pytest.approx(3000.0)
    assert s.grid_w == pytest.approx(s.load_w + 3000.0)
    home.set_battery_mode(BatteryMode.HOLD_CHARGE)  # may discharge at night
    s = home.step(s.at + timedelta(seconds=10), 10.0)
    assert s.battery_w < 0
    home.set_battery_mode(BatteryMode.IDLE)
    s = home.step(s.at + timedelta(seconds=10), 10.0)
    assert s.battery_w == 0.0
    home.set_battery_mode(BatteryMode.HOLD_DISCHARGE)
    s = home.step(s.at + timedelta(seconds=10), 10.0)
    assert s.battery_w == 0.0  # night, no surplus: holds
    home.set_battery_mode(BatteryMode.NORMAL)
    assert home.battery_window_w is None


def test_hil_no_grid_charging_when_told_pv_only() -> None:
    home = Home(HomeConfig(seed=6, **CLEAR), start=MIDNIGHT)
    home.set_grid_charging_allowed(False)
    home.set_battery_setpoint_w(3000.0)
    s = home.step(MIDNIGHT + timedelta(seconds=10), 10.0)
    assert s.battery_w == 0.0  # night: no PV to charge from


def test_hil_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="phases: must be 1 or 3"):
        HomeConfig(phases=2)
    with pytest.raises(ValueError, match="battery_charge_efficiency"):
        HomeConfig(battery_charge_efficiency=1.5)
    home = Home(HomeConfig())
    with pytest.raises(ValueError, match="dt_s"):
        home.step(MIDNIGHT, -1.0)
    with pytest.raises(ValueError, match="battery window"):
        home.set_battery_window(100.0, -100.0)
