"""The owner's commands, validated once for the page, the API and Home Assistant: each bad
field is named with its reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hems.core import commands
from hems.core.capabilities import BatteryMode
from hems.errors import HemsError

NOW = datetime(2026, 6, 10, 17, 0, tzinfo=UTC)  # 18:00 in London
LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"mode": "fast"}, "charger_id: is required"),
        ({"charger_id": "nope", "mode": "fast"}, "charger_id: unknown charger 'nope'"),
        ({"charger_id": "wb", "mode": "turbo"}, "mode: must be one of plan, min-pv, pv-only"),
    ],
)
def test_ev_mode_refusals_name_the_field(body: dict[str, object], error: str) -> None:
    with pytest.raises(HemsError, match=error):
        commands.ev_mode(body, ["wb"])


def test_ev_mode_default_is_the_configured_one() -> None:
    assert commands.ev_mode({"charger_id": "wb", "mode": "default"}, ["wb"]).mode is None
    assert commands.ev_mode({"charger_id": "wb", "mode": "off"}, ["wb"]).mode == "off"


def test_ev_session_departure_and_target() -> None:
    r = commands.ev_session({"charger_id": "wb", "energy_kwh": "12.5", "departure": "07:30"},
                            ["wb"], NOW, LONDON)  # fmt: skip
    assert r.energy_wh == 12_500
    assert r.departure == datetime(2026, 6, 11, 7, 30, tzinfo=LONDON)  # the next 07:30
    body = {"charger_id": "wb", "soc_pct": 30, "target_soc_pct": 80,
            "departure": "2026-06-11T06:00+01:00"}  # fmt: skip
    soc = commands.ev_session(body, ["wb"], NOW, LONDON)
    assert (soc.energy_wh, soc.soc_pct, soc.target_soc_pct) == (None, 30.0, 80.0)
    with pytest.raises(HemsError, match="departure: not HH:MM or ISO 8601"):
        commands.ev_session({"charger_id": "wb", "energy_kwh": 5, "departure": "25:99"},
                            ["wb"], NOW, LONDON)  # fmt: skip
    with pytest.raises(HemsError, match="energy_kwh: must be a finite number"):
        commands.ev_session({"charger_id": "wb", "energy_kwh": "nan", "departure": "07:00"},
                            ["wb"], NOW, LONDON)  # fmt: skip


def test_battery_mode_and_its_expiry() -> None:
    r = commands.battery_mode({"device_id": "bat", "mode": "idle", "minutes": 30}, NOW)
    assert (r.mode, r.expires_at, r.power_w) == (BatteryMode.IDLE, NOW + timedelta(minutes=30), 0)
    with pytest.raises(HemsError, match="mode: unknown battery mode 'turbo'"):
        commands.battery_mode({"device_id": "bat", "mode": "turbo", "minutes": 30}, NOW)
    with pytest.raises(HemsError, match=r"minutes: must be 1\.\.1440"):
        commands.battery_mode({"device_id": "bat", "mode": "idle", "minutes": 0}, NOW)
    with pytest.raises(HemsError, match="power_w: must be a float"):
        commands.battery_mode({"device_id": "bat", "mode": "idle", "minutes": 5, "power_w": "x"},
                              NOW)  # fmt: skip
