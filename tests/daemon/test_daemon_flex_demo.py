"""The pieces of `make demo ARGS=--aggregator` that the full-stack round trip does not reach:
the missing-broker message, the config overlay's errors, the history seeding rules, and the
aggregator's arithmetic check of a report."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hems.app.links import IntervalSender
from hems.config import ConfigErrors, load_config
from hil import demo
from hil.aggregator import check_report
from tests.conftest import REPO

KEY = "lXwYqx0Bav4Cv3XqJt6Ioadzpdn8EOyM7O3unPn9I8E"


def test_missing_mosquitto_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "find_mosquitto", lambda: None)
    assert demo.main(["--aggregator", "--seconds", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == demo.NO_MOSQUITTO
    assert "apt-get install mosquitto" in err and "Traceback" not in err


def test_overlay_turns_on_uplink_and_flex_and_names_bad_fields(tmp_path: Path) -> None:
    cfg = load_config(REPO / "config" / "demo.yaml")
    demo.aggregator_config(cfg, 18830, KEY)
    assert cfg.uplink.enabled and cfg.uplink.broker_port == 18830
    assert cfg.uplink.aggregator_public_key == KEY
    assert cfg.flex.enabled and cfg.flex.meter_device_id == "grid"
    assert cfg.flex.baseline_method == "dfs"

    bad = tmp_path / "overlay.yaml"
    bad.write_text("uplink: {enabled: true}\nflex: {baseline_method: nope, report_delay_s: -1}\n")
    with pytest.raises(ConfigErrors) as exc:
        demo.aggregator_config(load_config(REPO / "config" / "demo.yaml"), 1883, KEY, bad)
    problems = exc.value.problems
    assert any("flex.baseline_method: " in p and "nope" in p for p in problems), problems
    assert any("flex.report_delay_s: " in p for p in problems), problems
    bad.write_text("site: {id: x}\n")
    with pytest.raises(ConfigErrors, match="site: only uplink and flex"):
        demo.aggregator_config(load_config(REPO / "config" / "demo.yaml"), 1883, KEY, bad)


async def test_history_fills_gaps_only_and_is_not_sent_up(tmp_path: Path) -> None:
    db = tmp_path / "hems.db"
    until = datetime(2026, 11, 25, 17, 10, tzinfo=UTC)
    assert await demo.seed_meter_history(db, "grid", until, days=2) == 2 * 48
    noon_ms = int(datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp() * 1000)
    with sqlite3.connect(db) as conn:
        # A recorded interval (even a gap) is never replaced by invented data.
        conn.execute("DELETE FROM meter_intervals WHERE period_start_ms = ?", (noon_ms,))
        conn.execute(
            "INSERT INTO meter_intervals VALUES ('grid', ?, NULL, NULL, 'missing', 5)", (noon_ms,)
        )
    assert await demo.seed_meter_history(db, "grid", until, days=2) == 0
    assert await demo.seed_meter_history(db, "grid", until, days=3) == 48
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT MIN(period_start_ms), MAX(period_start_ms), COUNT(*), MIN(import_wh),"
            " MAX(import_wh) FROM meter_intervals WHERE quality = 'actual'"
        ).fetchone()
        gap = conn.execute(
            "SELECT quality FROM meter_intervals WHERE period_start_ms = ?", (noon_ms,)
        ).fetchone()
        cursor = conn.execute(
            "SELECT value FROM app_state WHERE key = ?", (IntervalSender.KEY,)
        ).fetchone()
    assert gap == ("missing",)
    assert rows[2] == 3 * 48 - 1
    assert rows[1] == int(datetime(2026, 11, 25, 16, 30, tzinfo=UTC).timestamp() * 1000)
    assert rows[3] >= 0 and 300 < rows[4] < 2000  # Wh per half-hour: a house, not a factory
    # The interval sender's cursor is past the invented rows, so they are not sent up.
    assert int(cursor[0]) == int(datetime(2026, 11, 25, 17, 0, tzinfo=UTC).timestamp() * 1000)


def test_aggregator_check_catches_a_report_that_does_not_add_up() -> None:
    period = {
        "period_start": "2026-11-25T17:30:00Z",
        "period_end": "2026-11-25T18:00:00Z",
        "unadjusted_baseline_kwh": 0.8,
        "adjustment_kwh": 0.0,
        "baseline_kwh": 0.8,
        "metered_kwh": 0.25,
        "delivered_kwh": 0.55,
    }
    second = dict(
        period,
        period_start="2026-11-25T18:00:00Z",
        period_end="2026-11-25T18:30:00Z",
        metered_kwh=0.9,
        delivered_kwh=0.0,
    )
    good = {
        "direction": "turn_down",
        "method_details": {"settlement": "positive_only"},
        "periods": [period, second],
        "total_delivered_kwh": 0.55,
    }
    assert check_report(good) == []
    inflated = {**good, "periods": [dict(period, delivered_kwh=0.75), second]}
    assert check_report(inflated)[0].startswith("periods[0].delivered_kwh: 0.75 != 0.55")
    net = {**good, "method_details": {"settlement": "net"}}
    assert check_report(net)[0].startswith("periods[1].delivered_kwh: 0.0 != -0.1")
    assert check_report({**good, "total_delivered_kwh": 1.0})[0].startswith(
        "total_delivered_kwh: 1.0"
    )
    hole = {**good, "periods": [period, dict(second, period_start="2026-11-25T18:30:00Z")]}
    assert "not contiguous" in check_report(hole)[0]
