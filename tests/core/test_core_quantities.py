"""The site-quantity table: every figure, the SoC rule and the staleness rule, table-driven."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from hems.core import ManualClock, Quantity, Reading, Role, SiteState
from hems.core.quantities import SITE_QUANTITIES, site_values

START = datetime(2026, 3, 1, tzinfo=UTC)
Q = Quantity


@dataclass(frozen=True)
class Dev:
    """A device with its readings; `stale` ones are published 60 s before the others."""

    device_id: str
    role: Role
    values: dict[Quantity, float] = field(default_factory=dict)
    stale: bool = False


async def values_of(*devices: Dev) -> dict[str, float | None]:
    clock = ManualClock(START)
    state = SiteState(clock, stale_after_s=30)
    for d in devices:
        state.register_device(d.device_id, d.role)
    old = [d for d in devices if d.stale]
    state.publish(Reading(d.device_id, q, v, clock.now()) for d in old for q, v in d.values.items())
    await clock.advance(60)
    new = [d for d in devices if not d.stale]
    state.publish(Reading(d.device_id, q, v, clock.now()) for d in new for q, v in d.values.items())
    return site_values(state)


FULL_SITE = (
    Dev("meter", Role.GRID, {Q.POWER_W: -800, Q.ENERGY_IMPORT_WH: 1_234_500,
                             Q.ENERGY_EXPORT_WH: 987_000}),
    Dev("inv", Role.PV, {Q.POWER_W: 2500, Q.ENERGY_EXPORT_WH: 4_000_000}),
    Dev("bat", Role.BATTERY, {Q.POWER_W: 1200, Q.SOC_PCT: 64}),
    Dev("cp", Role.EV, {Q.POWER_W: 400, Q.ENERGY_IMPORT_WH: 55_500, Q.SOC_PCT: 30}),
)  # fmt: skip


async def test_every_figure_of_a_fresh_site() -> None:
    assert await values_of(*FULL_SITE) == {
        "grid_power_w": -800,
        "grid_import_power_w": 0,
        "grid_export_power_w": 800,
        "pv_power_w": 2500,
        "battery_power_w": 1200,
        "battery_soc_pct": 64,  # the EV's SoC is the car's, not the site's
        "load_power_w": -800 + 2500 - 1200 - 400,
        "ev_power_w": 400,
        "grid_import_energy_kwh": 1234.5,
        "grid_export_energy_kwh": 987.0,
        "pv_energy_kwh": 4000.0,
        "ev_energy_kwh": 55.5,
    }


async def test_no_devices_means_every_figure_is_unknown() -> None:
    assert set((await values_of()).values()) == {None}


BAT = Role.BATTERY


@pytest.mark.parametrize(
    ("batteries", "soc_pct"),
    [
        ([], None),  # no battery: unknown, never 0
        ([Dev("b1", BAT, {Q.SOC_PCT: 40})], 40),
        ([Dev("b1", BAT, {Q.SOC_PCT: 40}), Dev("b2", BAT, {Q.SOC_PCT: 80})], 60),
        # One stale battery: the site's stored energy is unknown. (The web page used to show
        # the fresh battery's 40 % here; the uplink and Home Assistant already said None.)
        ([Dev("b1", BAT, {Q.SOC_PCT: 40}), Dev("b2", BAT, {Q.SOC_PCT: 80}, stale=True)], None),
        ([Dev("b1", BAT, {Q.SOC_PCT: 40}, stale=True)], None),
        ([Dev("b1", BAT, {Q.SOC_PCT: 40}), Dev("b2", BAT, {Q.POWER_W: 100})], None),  # no SoC
    ],
)
async def test_soc_is_the_mean_over_all_batteries_and_none_if_any_is_stale(
    batteries: list[Dev], soc_pct: float | None
) -> None:
    assert (await values_of(*batteries))["battery_soc_pct"] == soc_pct


GRID = Dev("meter", Role.GRID, {Q.POWER_W: 1000})


@pytest.mark.parametrize(
    ("devices", "load_w"),
    [
        ([GRID], 1000),  # no PV, battery or EV on site: they contribute nothing
        ([GRID, Dev("inv", Role.PV, {Q.POWER_W: 3000})], 4000),
        ([GRID, Dev("inv", Role.PV, {Q.POWER_W: 3000}, stale=True)], None),  # stale: unknown
        ([GRID, Dev("bat", BAT, {Q.POWER_W: -500}), Dev("cp", Role.EV, {Q.POWER_W: 1400})], 100),
        ([Dev("meter", Role.GRID, {Q.POWER_W: 1000}, stale=True)], None),
        ([Dev("inv", Role.PV, {Q.POWER_W: 3000})], None),  # no grid meter: no balance
        # a switchable load sits behind the grid meter: part of the load, not subtracted
        ([GRID, Dev("heater", Role.LOAD, {Q.POWER_W: 600})], 1000),
    ],
)
async def test_house_load_is_the_balance_and_unknown_when_a_part_is_stale(
    devices: list[Dev], load_w: float | None
) -> None:
    assert (await values_of(*devices))["load_power_w"] == load_w


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        # every power figure of a role is None when any of its devices is stale
        (
            [Dev("pv1", Role.PV, {Q.POWER_W: 1000}), Dev("pv2", Role.PV, {Q.POWER_W: 500})],
            {"pv_power_w": 1500},
        ),
        (
            [Dev("pv1", Role.PV, {Q.POWER_W: 1000}),
             Dev("pv2", Role.PV, {Q.POWER_W: 500}, stale=True)],
            {"pv_power_w": None},
        ),
        (
            [Dev("m", Role.GRID, {Q.POWER_W: 2500})],
            {"grid_power_w": 2500, "grid_import_power_w": 2500, "grid_export_power_w": 0},
        ),
        (
            [Dev("m", Role.GRID, {Q.POWER_W: 2500}, stale=True)],
            {"grid_power_w": None, "grid_import_power_w": None, "grid_export_power_w": None},
        ),
        # a counter is None when any device of the role lacks a fresh register
        (
            [Dev("m1", Role.GRID, {Q.ENERGY_IMPORT_WH: 1000}),
             Dev("m2", Role.GRID, {Q.POWER_W: 1})],
            {"grid_import_energy_kwh": None},
        ),
        (
            [Dev("m1", Role.GRID, {Q.ENERGY_IMPORT_WH: 1000, Q.ENERGY_EXPORT_WH: 1}, stale=True)],
            {"grid_import_energy_kwh": None, "grid_export_energy_kwh": None},
        ),
        (
            [Dev("cp1", Role.EV, {Q.ENERGY_IMPORT_WH: 1500}),
             Dev("cp2", Role.EV, {Q.ENERGY_IMPORT_WH: 500})],
            {"ev_energy_kwh": 2.0, "ev_power_w": None},  # no power sample: unknown, not 0
        ),
    ],
)  # fmt: skip
async def test_role_figures_follow_the_staleness_rule(
    devices: list[Dev], expected: dict[str, float | None]
) -> None:
    values = await values_of(*devices)
    assert {k: values[k] for k in expected} == expected


def test_the_table_is_consistent() -> None:
    keys = [q.key for q in SITE_QUANTITIES]
    assert len(keys) == len(set(keys))
    classes = {
        "W": ("_w", "power", "measurement"),
        "%": ("_pct", "battery", "measurement"),
        "kWh": ("_kwh", "energy", "total_increasing"),
    }
    for q in SITE_QUANTITIES:
        suffix, device_class, state_class = classes[q.unit]
        assert q.key.endswith(suffix), q.key  # the unit is in the name
        assert (q.device_class, q.state_class) == (device_class, state_class), q.key
