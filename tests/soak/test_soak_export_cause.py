"""The soak's verdict on a step over the export limit (hil/soak.py `export_over_cause`): the
daemon's commands against the sun and load it had read, the previous step's when it kept
up, an older one only when the rig shows it was acting on that one."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hil.home import HomeState
from hil.soak import export_over_cause

T0 = datetime(2026, 6, 22, 17, 0, tzinfo=UTC)
PV_MAX_W = 6000.0


def _state(step: int, *, pv_w: float, load_w: float, battery_w: float) -> HomeState:
    grid_w = load_w + battery_w - pv_w
    one = (0.0,)
    return HomeState(
        at=T0 + timedelta(seconds=200 * step),
        pv_available_w=pv_w,
        pv_w=pv_w,
        pv_limit_pct=100.0,
        load_w=load_w,
        external_w=0.0,
        battery_w=battery_w,
        soc_pct=50.0,
        grid_w=grid_w,
        grid_phase_w=(grid_w,),
        pv_phase_w=(pv_w,),
        battery_phase_w=(battery_w,),
        voltage_phase_v=(230.0,),
        current_phase_a=(abs(grid_w) / 230.0,),
        frequency_hz=50.0,
        import_wh=0.0,
        export_wh=0.0,
        import_phase_wh=one,
        export_phase_wh=one,
        pv_energy_wh=0.0,
        battery_charge_wh=0.0,
        battery_discharge_wh=0.0,
        over_current=False,
    )


# Step 2 is over: the battery gives 4000 W while PV gives 1000 W and the house takes 1000 W.
NOW = _state(2, pv_w=1000.0, load_w=1000.0, battery_w=-4000.0)


def test_a_sun_rise_between_readings_is_not_the_daemons_doing() -> None:
    before = _state(1, pv_w=500.0, load_w=1000.0, battery_w=-3000.0)  # 3500 W with the old sun
    cause, commanded_w = export_over_cause(
        replace(NOW, pv_available_w=1500.0, pv_w=1500.0), before, PV_MAX_W
    )
    assert cause == "sun-or-house"
    assert commanded_w == 500.0 + 4000.0 - 1000.0


def test_commands_over_against_what_the_daemon_read_are_its_own_doing() -> None:
    before = _state(1, pv_w=1000.0, load_w=1000.0, battery_w=-4000.0)
    assert export_over_cause(NOW, before, PV_MAX_W)[0] == "commands"


def test_an_older_reading_the_daemon_acted_on_is_a_daemon_behind() -> None:
    # Two steps back the house took 1500 W: 4000 W of battery then gave 3500 W of export.
    older = _state(0, pv_w=1000.0, load_w=1500.0, battery_w=-3000.0)
    before = _state(1, pv_w=1000.0, load_w=1000.0, battery_w=-4000.0)
    assert export_over_cause(NOW, before, PV_MAX_W, [older])[0] == "daemon-behind"
    # Behind, but over against that reading too: still its own doing.
    also_over = _state(0, pv_w=1000.0, load_w=1000.0, battery_w=-4000.0)
    assert export_over_cause(NOW, before, PV_MAX_W, [also_over])[0] == "commands"
