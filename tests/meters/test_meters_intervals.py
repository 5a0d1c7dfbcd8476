"""Half-hourly import/export from cumulative registers: quality flags, gaps, DST, SQLite."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from hems.core.clock import ManualClock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.devices.meters.intervals import (
    PERIOD_MS,
    IntervalRecorder,
    Sample,
    derive_intervals,
    load_intervals,
    settlement_periods,
    to_ms,
)
from hems.devices.meters.service import MeterService
from hems.devices.modbus.profile_config import ProfileDeviceConfig
from hems.store.db import Database

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
T0_MS = to_ms(T0)


def steady(
    start_ms: int, end_ms: int, step_s: int, import_w: float, export_w: float
) -> list[Sample]:
    """Cumulative registers of a meter seeing constant power, sampled every step_s."""
    out = []
    for t in range(start_ms, end_ms + 1, step_s * 1000):
        h = (t - T0_MS) / 3_600_000
        out.append(Sample(t + 7, 1_000_000 + import_w * h, 50_000 + export_w * h))
    return out


def test_actual_periods_from_regular_samples() -> None:
    samples = steady(T0_MS - 60_000, T0_MS + 2 * PERIOD_MS + 60_000, 10, 2000.0, 400.0)
    got = derive_intervals(samples, T0_MS, T0_MS + 2 * PERIOD_MS, fresh_s=60, max_gap_s=7200)
    assert [(i.quality, i.import_wh, i.export_wh) for i in got] == [
        ("actual", pytest.approx(1000.0), pytest.approx(200.0)),
        ("actual", pytest.approx(1000.0), pytest.approx(200.0)),
    ]


def test_gap_gives_estimated_then_missing() -> None:
    # Data until 10:20, nothing until 10:40, then again: the 10:30 boundary is interpolated.
    before = steady(T0_MS - 60_000, T0_MS + 20 * 60_000, 10, 1200.0, 0.0)
    after = steady(T0_MS + 40 * 60_000, T0_MS + 2 * PERIOD_MS + 60_000, 10, 1200.0, 0.0)
    got = derive_intervals(before + after, T0_MS, T0_MS + 2 * PERIOD_MS, 60, 7200)
    assert [i.quality for i in got] == ["estimated", "estimated"]
    assert got[0].import_wh == pytest.approx(600.0, abs=0.5)
    # A gap longer than max_gap_s: the boundary is unknown and the energy missing, never 0.
    got = derive_intervals(before + after, T0_MS, T0_MS + 2 * PERIOD_MS, 60, 600)
    assert [(i.quality, i.import_wh) for i in got] == [("missing", None), ("missing", None)]
    # No data after a boundary at all.
    assert (
        derive_intervals(before, T0_MS + PERIOD_MS, T0_MS + 2 * PERIOD_MS, 60, 7200)[0].quality
        == "missing"
    )


def test_register_going_backwards_is_missing() -> None:
    s = [Sample(T0_MS - 1000, 5000, 0), Sample(T0_MS + 1000, 10, 0)]  # meter swapped
    s += [Sample(T0_MS + PERIOD_MS + 1000, 20, 0)]
    assert derive_intervals(s, T0_MS, T0_MS + PERIOD_MS, 60, 7200)[0].quality == "missing"


@pytest.mark.parametrize(
    ("day", "tz", "count"),
    [
        (date(2026, 3, 29), "Europe/London", 46),
        (date(2026, 10, 25), "Europe/London", 50),
        (date(2026, 10, 25), "Europe/Amsterdam", 50),
        (date(2026, 6, 1), "Europe/London", 48),
    ],
)
def test_settlement_periods_on_dst_days(day: date, tz: str, count: int) -> None:
    periods = settlement_periods(day, tz)
    assert len(periods) == count
    assert all(b - a == PERIOD_MS for a, b in itertools.pairwise(periods))


def test_dst_day_energy_adds_up() -> None:
    # The spring-forward day in London: 46 UTC periods, each 30 min of 1 kW = 500 Wh.
    periods = settlement_periods(date(2026, 3, 29), "Europe/London")
    samples = []
    for t in range(periods[0] - 60_000, periods[-1] + PERIOD_MS + 60_001, 30_000):
        samples.append(Sample(t, (t - periods[0]) / 3_600_000 * 1000.0 + 10_000, 0.0))
    got = derive_intervals(samples, periods[0], periods[-1] + PERIOD_MS, 60, 7200)
    assert len(got) == 46 and {i.quality for i in got} == {"actual"}
    assert sum(i.import_wh or 0 for i in got) == pytest.approx(23_000.0)


async def test_recorder_writes_and_upgrades_missing(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0 - timedelta(minutes=1))
    rec = IntervalRecorder("p1", db, clock, fresh_s=60, missing_after_s=300, max_gap_s=7200)
    try:
        imp = 1_000_000.0
        # 09:59 .. 10:20 every 10 s at 1.2 kW, then the meter goes silent.
        while clock.now() <= T0 + timedelta(minutes=20):
            rec.add(clock.now(), imp, 0.0)
            await clock.advance(10)
            imp += 1200.0 * 10 / 3600
        await clock.advance(30 * 60)  # 10:50: period 10:00 ended 20 min ago, no data since
        rows = await rec.flush()
        assert [(r.period_start_ms, r.quality) for r in rows] == [(T0_MS, "missing")]
        # 10:50 the meter is back (register grew meanwhile): the gap is interpolated.
        imp += 1200.0 * 30 / 60
        rec.add(clock.now(), imp, 0.0)
        await clock.advance(10)
        rec.add(clock.now(), imp + 3.33, 0.0)
        await rec.flush()
        stored = await load_intervals(db, "p1", T0_MS - PERIOD_MS, T0_MS + 4 * PERIOD_MS)
        assert [(r.period_start_ms, r.quality) for r in stored] == [(T0_MS, "estimated")]
        assert stored[0].import_wh == pytest.approx(600.0, abs=1.0)
        # An actual row is never replaced by a later estimate.
        await db.execute("UPDATE meter_intervals SET quality='actual' WHERE device_id='p1'")
        await db.execute(
            "INSERT INTO meter_intervals VALUES ('p1', ?, 1, 1, 'estimated', 0)"
            " ON CONFLICT DO UPDATE SET quality='estimated'"
            " WHERE meter_intervals.quality != 'actual'",
            (T0_MS,),
        )
        assert (await load_intervals(db, "p1", T0_MS, T0_MS + 1))[0].quality == "actual"
    finally:
        await db.close()


async def test_service_records_modbus_meter_from_site_state(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0 - timedelta(seconds=30))
    state = SiteState(clock)
    meter_cfg = ProfileDeviceConfig.model_validate(
        {
            "type": "modbus-profile",
            "id": "sdm",
            "role": "grid",
            "profile": "eastron-sdm630",
            "host": "127.0.0.1",
        }
    )
    service = MeterService([meter_cfg], state, clock, db)
    state.register_device("sdm", Role.GRID)
    try:
        wh = 0.0
        for _ in range(int(31 * 60 / 15) + 2):
            at = clock.now()
            state.publish(
                [
                    Reading("sdm", Quantity.POWER_W, 2000.0, at),
                    Reading("sdm", Quantity.ENERGY_IMPORT_WH, 5_000_000 + wh, at),
                    Reading("sdm", Quantity.ENERGY_EXPORT_WH, 10.0, at),
                ]
            )
            await clock.advance(15)
            wh += 2000.0 * 15 / 3600
        await service.flush()
        (row,) = await load_intervals(db, "sdm", T0_MS, T0_MS + PERIOD_MS)
        assert row.quality == "actual"
        assert row.import_wh == pytest.approx(1000.0, abs=0.5) and row.export_wh == 0.0
        # the CHECK constraint keeps 'missing' rows empty and quality within the enum
        with pytest.raises(Exception, match="CHECK"):
            await db.execute("INSERT INTO meter_intervals VALUES ('x', 0, 1, 1, 'guessed', 0)")
    finally:
        await db.close()


def test_example_config_snippet_loads(tmp_path: Path) -> None:
    from hems.config import load_config
    from hems.devices.meters.config import GlowMeterConfig, P1MeterConfig

    cfg = tmp_path / "hems.yaml"
    cfg.write_text(
        """\
site: {id: demo, timezone: Europe/Amsterdam}
devices:
  - type: p1
    id: p1-meter
    port: socket://192.168.1.40:23
    dsmr_version: "5"
  - type: glow-mqtt
    id: glow-cad
    host: 127.0.0.1
    cad_id: ABCDEF012345
    intervals: {fresh_s: 120, missing_after_s: 600}
  - type: modbus-profile
    id: sungrow-battery
    role: battery
    profile: sungrow-sh
    host: 192.168.1.50
    battery_modes: [normal, force-charge, power-setpoint]
"""
    )
    config = load_config(cfg)
    p1, glow, inv = config.devices
    assert isinstance(p1, P1MeterConfig) and p1.role is Role.GRID
    assert isinstance(glow, GlowMeterConfig)
    assert glow.topic == "glow/ABCDEF012345/SENSOR/electricitymeter"
    assert inv.device_unit_id == 1 and len(inv.modes) == 3
