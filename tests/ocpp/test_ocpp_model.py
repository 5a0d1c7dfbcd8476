"""Pure rules: state mapping across versions and quirks, meter values, session energy."""

from __future__ import annotations

import math

import pytest

from hems.config import ConfigErrors, validate
from hems.core.capabilities import EvState
from hems.devices.ocpp.model import derive_state as ds
from hems.devices.ocpp.model import followed, parse_meter_values, session_energy_wh

ON = {"online": True, "faulted": False, "paused_by_us": False, "power_w": None}


@pytest.mark.parametrize(
    ("status", "overrides", "expected"),
    [
        ("Available", {}, EvState.AVAILABLE),
        ("Preparing", {}, EvState.PLUGGED),
        ("Occupied", {}, EvState.PLUGGED),  # 2.0.1 connector
        ("EVConnected", {}, EvState.PLUGGED),  # 2.0.1 chargingState
        ("Idle", {}, EvState.PLUGGED),
        ("Charging", {"power_w": 7000.0}, EvState.CHARGING),
        ("SuspendedEV", {}, EvState.SUSPENDED_EV),
        ("SuspendedEVSE", {}, EvState.SUSPENDED_EVSE),
        ("Faulted", {}, EvState.FAULTED),
        ("Unavailable", {}, EvState.FAULTED),
        ("Charging", {"online": False}, EvState.OFFLINE),
        ("Charging", {"faulted": True}, EvState.FAULTED),
        (None, {}, EvState.AVAILABLE),
        ("Martian", {}, EvState.FAULTED),
        # Quirks: SuspendedEV while we hold it at 0 means the EVSE.
        (
            "SuspendedEV",
            {"paused_by_us": True, "suspended": "ev_when_paused"},
            EvState.SUSPENDED_EVSE,
        ),
        ("SuspendedEV", {"paused_by_us": True}, EvState.SUSPENDED_EV),
        # "Charging" at 0 W: whoever holds it back.
        ("Charging", {"power_w": 0.0, "paused_by_us": True}, EvState.SUSPENDED_EVSE),
        ("Charging", {"power_w": 0.0, "suspended": "charging_at_zero"}, EvState.SUSPENDED_EV),
        ("Charging", {"power_w": 0.0}, EvState.CHARGING),
    ],
)
def test_state_mapping(status, overrides, expected) -> None:
    assert ds(status, **{**ON, **overrides}) is expected


def test_meter_values_16_units_and_phases() -> None:
    sample = parse_meter_values(
        [
            {
                "timestamp": "t",
                "sampled_value": [
                    {"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                    {
                        "value": "2.3",
                        "measurand": "Power.Active.Import",
                        "unit": "kW",
                        "phase": "L1",
                    },
                    {
                        "value": "2.3",
                        "measurand": "Power.Active.Import",
                        "unit": "kW",
                        "phase": "L2",
                    },
                    {"value": "10", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
                    {"value": "9.5", "measurand": "Current.Import", "unit": "A", "phase": "L2"},
                    {"value": "30", "measurand": "Current.Import", "unit": "A"},
                    {"value": "231", "measurand": "Voltage", "unit": "V", "phase": "L1-N"},
                    {"value": "oops", "measurand": "SoC"},
                    {"value": "1", "measurand": "Temperature"},
                ],
            }
        ]
    )
    assert sample.energy_wh == 12_500.0
    assert sample.power_w == 4_600.0
    assert sample.current_a == {"L1": 10.0, "L2": 9.5}
    assert sample.max_phase_current_a == 10.0
    assert sample.voltage_v == 231.0
    assert sample.soc_pct is None
    assert sample.problems == ["SoC: value 'oops' is not a number"]


def test_meter_values_201_multiplier_and_default_unit() -> None:
    sample = parse_meter_values(
        [
            {
                "timestamp": "t",
                "sampled_value": [
                    {"value": 12.5, "unit_of_measure": {"unit": "Wh", "multiplier": 3}},
                    {"value": 55, "measurand": "SoC", "unit_of_measure": {"unit": "Percent"}},
                    {"value": float("inf"), "measurand": "Power.Active.Import"},
                ],
            }
        ]
    )
    assert sample.energy_wh == 12_500.0  # no measurand: the register by default
    assert sample.soc_pct == 55
    assert sample.power_w is None and "not finite" in sample.problems[0]
    kwh = parse_meter_values([{"sampled_value": [{"value": "3.2"}]}], default_energy_unit="kWh")
    assert kwh.energy_wh == 3_200.0


@pytest.mark.parametrize(
    ("register", "start", "expected"),
    [
        (12_000_500.0, 12_000_000.0, 500.0),
        (500.0, 0.0, 500.0),
        (None, 1.0, None),
        (1.0, None, None),
        (10.0, 20.0, None),
    ],
)
def test_session_energy(register, start, expected) -> None:
    assert session_energy_wh(register, start) == expected


def test_followed() -> None:
    assert followed(10, 10.9, 1.0) is True
    assert followed(10, 11.5, 1.0) is False
    assert followed(10, 3.0, 1.0) is True  # the car may want less
    assert followed(0, 0.5, 1.0) is True
    assert followed(0, 6.0, 1.0) is False
    assert followed(10, None, 1.0) is None


@pytest.mark.parametrize(
    ("ocpp", "chargers", "problem"),
    [
        ({"port": 0}, [], "ocpp.port: must be 1..65535"),
        (
            {},
            [{"id": "cp1", "password": "short"}],
            "devices[0].password: must be 16..40 characters",
        ),
        (
            {},
            [{"id": "cp1", "min_current_a": 10, "max_current_a": 8}],
            "max_current_a must be >= min_current_a",
        ),
        ({}, [{"id": "cp1", "min_current_a": 5}], "devices[0].min_current_a: must be 6.0..80.0"),
        ({}, [{"id": "cp1", "safe_state": "off"}], "devices[0].safe_state"),
        ({}, [{"id": "cp1"}, {"id": "cp2", "identity": "cp1"}], "devices[1].identity: 'cp1'"),
        ({}, [{"id": "cp1", "phases": 2}], "devices[0].phases"),
        ({}, [{"id": "cp1", "ev": {"target_energy_wh": 0}}], "devices[0].ev.target_energy_wh"),
        ({"enabled": False}, [{"id": "cp1"}], "devices[0].type: ocpp needs ocpp.enabled: true"),
        ({"meter_value_sample_interval_s": 0}, [], "ocpp.meter_value_sample_interval_s"),
        ({"tls": {"cert_path": "/x"}}, [], "ocpp.tls.key_path: is required"),
    ],
)
def test_config_errors_name_the_field(ocpp, chargers, problem) -> None:
    devices = [{"type": "ocpp", **c} for c in chargers]
    section = {"enabled": True, "allow_insecure_chargers": True, **ocpp}
    with pytest.raises(ConfigErrors) as err:
        validate({"site": {"id": "home"}, "ocpp": section, "devices": devices})
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_config_example() -> None:
    cfg = validate(
        {
            "site": {"id": "home"},
            "ocpp": {"enabled": True},
            "devices": [
                {
                    "type": "ocpp",
                    "id": "garage",
                    "identity": "GARAGE-1",
                    "password": "0123456789abcdef0123",
                    "quirks": "gb-scp-1.6",
                    "phases": 1,
                    "safe_state": "minimum",
                }
            ],
        }
    )
    charger = cfg.ocpp_config().charger("GARAGE-1")
    assert charger is not None and charger.id == "garage"
    assert cfg.ocpp.port == 9000 and math.isclose(charger.min_current_a, 6.0)
    assert "0123" not in repr(charger)  # the password never shows


def test_a_charger_needs_a_password_unless_insecure_is_explicit() -> None:
    devices = [{"type": "ocpp", "id": "garage", "identity": "GARAGE-1"}]
    with pytest.raises(ConfigErrors) as err:
        validate({"site": {"id": "home"}, "ocpp": {"enabled": True}, "devices": devices})
    assert any("devices[0].password: required" in p for p in err.value.problems), err.value.problems
    cfg = validate(
        {
            "site": {"id": "home"},
            "ocpp": {"enabled": True, "allow_insecure_chargers": True},
            "devices": devices,
        }
    )
    assert cfg.ocpp_config().charger("GARAGE-1") is not None


def test_unknown_quirk_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigErrors) as err:
        validate(
            {"site": {"id": "home"}, "devices": [{"type": "ocpp", "id": "cp1", "quirks": "x"}]}
        )
    assert "devices[0].quirks: unknown charger profile 'x' (known: " in (err.value.problems[0])
