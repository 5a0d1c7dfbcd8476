"""Charger quirks: refused profiles fall back, W-only chargers, lifetime registers,
suspended semantics, limits ignored, GB randomised delay vs DSR, profile files."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocpp_helpers import PASSWORD, central_system, charger_sim, ocpp_config, wait_for

from hems.core.capabilities import EvState
from hems.devices.ocpp.quirks import all_profiles, load_profile_file
from hems.errors import ConfigError, DeviceRejected
from hil.chargepoint import SimQuirks
from hil.ev import EvModel


def _cfg(quirks: str, **charger: object):
    return ocpp_config(
        chargers=[
            {"id": "cp1", "identity": "CP1", "password": PASSWORD, "quirks": quirks, **charger}
        ]
    )


@pytest.mark.parametrize("answer", ["Rejected", "NotSupported"])
async def test_refused_profile_falls_back_to_change_configuration(answer: str) -> None:
    quirks = SimQuirks(profile_response=answer, limit_config_key="MaxCurrent")
    async with central_system(_cfg("config-maxcurrent-1.6")) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, quirks=quirks) as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            await charger.set_limit(8, 3)
            assert ("config", ("MaxCurrent", "8")) in sim.received
            await wait_for(lambda: sim.current_a == 8.0, what="8 A")
            assert charger.profile_unsupported
            profiles_before = sum(1 for k, _ in sim.received if k == "profile")
            await charger.set_limit(9, 3)  # straight to the fallback now
            assert sum(1 for k, _ in sim.received if k == "profile") == profiles_before
            await wait_for(lambda: sim.current_a == 9.0, what="9 A")


async def test_refused_profile_without_fallback_is_an_error() -> None:
    quirks = SimQuirks(profile_response="Rejected")
    async with central_system(
        ocpp_config(chargers=[{"id": "cp1", "identity": "CP1", "password": PASSWORD}])
    ) as (
        cs,
        _state,
    ):
        charger = cs.charger("cp1")
        async with charger_sim(cs, quirks=quirks):
            await wait_for(lambda: charger.booted, what="boot")
            with pytest.raises(DeviceRejected, match="Rejected"):
                await charger.set_limit(8, 3)


async def test_data_transfer_limit_and_kwh_register() -> None:
    quirks = SimQuirks(
        profile_response="NotSupported",
        limit_config_key=None,
        limit_data_transfer=("com.example.charger", "SetMaxCurrent"),
        energy_in_kwh=True,
        omit_units=True,
        lifetime_register_wh=5_000_000,
    )
    async with central_system(_cfg("datatransfer-limit-1.6")) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, quirks=quirks) as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            await charger.set_limit(7, 3)
            assert not any(k == "profile" for k, _ in sim.received)
            await wait_for(lambda: sim.current_a == 7.0, what="7 A")
            # The charger sends kWh without a unit; the profile says so, so Wh come out right.
            await wait_for(lambda: charger.sample and charger.sample.energy_wh, what="energy")
            assert abs(charger.sample.energy_wh - sim.register_wh) <= 100  # 0.1 kWh steps


async def test_watts_only_station_gets_watts() -> None:
    quirks = SimQuirks(wants_watts=True)
    async with central_system(_cfg("tx-default-watts-2.0.1")) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version="2.0.1", quirks=quirks) as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            await charger.set_limit(10, 3)
            profile = next(p for k, p in sim.received if k == "profile")
            schedule = profile["charging_schedule"][0]
            assert schedule["charging_rate_unit"] == "W"
            assert float(schedule["charging_schedule_period"][0]["limit"]) == 6900.0
            await wait_for(lambda: abs(sim.current_a - 10.0) < 0.01, what="10 A")


async def test_session_energy_is_not_the_lifetime_register(version: str) -> None:
    quirks = SimQuirks(lifetime_register_wh=12_345_678.0)
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version, quirks=quirks) as sim:
            await wait_for(lambda: charger.transaction, what="transaction")
            await wait_for(
                lambda: charger.sample and (charger.sample.energy_wh or 0) > 12_345_678.0,
                what="register moving",
            )
            session = await charger.session_energy_wh()
            assert 0 < session < 5_000
            assert abs(session - (sim.register_wh - 12_345_678.0)) < 100


async def test_suspended_ev_when_paused_reads_as_suspended_evse() -> None:
    quirks = SimQuirks(suspended_ev_when_paused=True)
    async with central_system(_cfg("config-maxcurrent-1.6")) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, quirks=quirks) as sim:
            await wait_for(lambda: charger.current_state() is EvState.CHARGING, what="charging")
            await charger.set_limit(0, 3)
            await wait_for(lambda: sim.status == "SuspendedEV", what="charger says SuspendedEV")
            await wait_for(
                lambda: charger.current_state() is EvState.SUSPENDED_EVSE, what="read as EVSE"
            )


async def test_full_car_reads_as_suspended_ev(version: str) -> None:
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version, ev=EvModel(soc_pct=100.0)):
            await wait_for(
                lambda: charger.current_state() is EvState.SUSPENDED_EV, what="suspended by EV"
            )


async def test_charger_that_ignores_limits_is_flagged(version: str) -> None:
    quirks = SimQuirks(ignores_limits=True)
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version, quirks=quirks):
            await wait_for(lambda: charger.current_state() is EvState.CHARGING, what="charging")
            await charger.set_limit(8, 3)  # accepted ...
            await wait_for(lambda: charger.ignores_limits, what="flagged")  # ... not obeyed
            assert charger.limit is not None and charger.limit.outcome is False


async def test_gb_randomised_delay_and_dsr() -> None:
    # The charger delays non-DSR changes by up to 600 s; DSR changes apply at once.
    quirks = SimQuirks(randomised_delay_max_s=600.0)
    async with central_system(_cfg("gb-scp-1.6")) as (cs, _state):
        charger = cs.charger("cp1")
        assert charger.expected_response_delay_s() == 600.0
        assert charger.expected_response_delay_s(dsr=True) == 0.0
        async with charger_sim(cs, quirks=quirks, seed=3) as sim:
            await wait_for(lambda: charger.current_state() is EvState.CHARGING, what="charging")
            await charger.set_limit(10, 3)
            normal = [d for k, d in sim.received if k == "limit"][-1]
            assert normal["dsr"] is False and normal["delay_s"] > 0
            assert sim.current_a > 10.0  # still waiting out its own delay; hems adds none
            assert charger.limit is not None and charger.limit.check_after_s > 0
            await charger.set_limit(8, 3, dsr=True)
            flagged = [d for k, d in sim.received if k == "limit"][-1]
            assert flagged == {"current_a": 8.0, "dsr": True, "delay_s": 0.0}
            assert ("data_transfer", ("org.hems", "DemandSideResponse", '{"dsr": true}')) in (
                sim.received
            )
            await wait_for(lambda: sim.current_a == 8.0, what="DSR change applied now")


async def test_dsr_flag_in_201_custom_data(db) -> None:
    async with central_system(ocpp_config(), db=db) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version="2.0.1") as sim:
            await wait_for(lambda: charger.booted, what="boot")
            await charger.set_limit(10, 3, dsr=True)
            profile = [p for k, p in sim.received if k == "profile"][-1]
            assert profile["custom_data"] == {"vendor_id": "org.hems", "dsr": True}
    rows = await db.fetchall("SELECT current_a, dsr, method, status FROM ocpp_commands")
    assert [tuple(r) for r in rows] == [(10.0, 1, "charging_profile", "Accepted")]


def test_shipped_profiles_load() -> None:
    profiles = all_profiles()
    assert {"generic-1.6", "generic-2.0.1"} <= set(profiles)
    assert len(profiles) >= 5
    for name, profile in profiles.items():
        assert profile.family == name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "family: bad\nocpp_version: '1.6'\nlimit:\n  method: fallback\n",
            "limit: Value error, fallback: is required when method is 'fallback' (line 3)",
        ),
        (
            "family: bad\nocpp_version: '1.6'\nlimit:\n  fallback:\n    method: data_transfer\n",
            "limit.fallback: Value error, vendor_id: is required",
        ),
        ("family: bad\nocpp_version: '3.0'\n", "ocpp_version: Input should be"),
        ("family: bad\nocpp_version: '1.6'\nsuspended: sometimes\n", "suspended: Input should"),
        ("family: bad\nocpp_version: '1.6'\nvoltage: 3\n", "voltage: unknown key (line 3)"),
        ("family: other\nocpp_version: '1.6'\n", "must equal the file name (line 1)"),
        ("family: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_profile_names_file_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profile_file(path)
    message = str(err.value)
    assert str(path) in message
    assert expected.replace("Value error, ", "") in message
