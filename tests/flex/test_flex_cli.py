"""`hems baseline` on CSV files, good and bad (run in-process through hems.cli.main)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest
from flexdata import build_data, to_csv

from hems.cli import main
from hems.flex.calendar import WorkingDayCalendar

EVENT = "2024-01-31T17:00:00+00:00/2024-01-31T18:00:00+00:00"


@pytest.fixture
def jan_csv(tmp_path: Path) -> Path:
    # Every working day 0.5 kWh per period, weekends 2.0, 31 Jan: 0.1 in the event, else 0.5.
    cal = WorkingDayCalendar()

    def fn(d: date, t: datetime) -> float:
        if d == date(2024, 1, 31) and t.hour == 17:
            return 0.1
        return 0.5 if cal.is_working_day(d) else 2.0

    path = tmp_path / "jan.csv"
    path.write_text(to_csv(build_data(date(2023, 12, 1), date(2024, 1, 31), fn)))
    return path


def test_table_output(jan_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["baseline", "--method", "elexon-bl01", "--data", str(jan_csv), "--event", EVENT])
    out = capsys.readouterr().out
    assert rc == 0
    # U = 0.5; window metered 0.5 -> A = 0; delivered 0.5 - 0.1 = 0.4 per period, 0.8 total
    assert "2024-01-31T17:00:00Z      0.500     0.000     0.500     0.100     0.400" in out
    assert "total delivered" in out and "0.800" in out
    assert "used 10" in out and "sha256" in out


def test_json_output_is_the_report_payload(jan_csv: Path, capsys: pytest.CaptureFixture[str]):
    rc = main(["baseline", "--method", "pjm-high-4-of-5", "--data", str(jan_csv), "--event",
               EVENT, "--json"])  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert payload["method"] == "pjm-high-4-of-5"
    assert payload["total_delivered_kwh"] == pytest.approx(0.8)
    assert len(payload["days_used"]) == 4
    assert len(payload["meter_data_sha256"]) == 64
    assert [p["period_end"] for p in payload["periods"]] == [
        "2024-01-31T17:30:00Z",
        "2024-01-31T18:00:00Z",
    ]


def test_cli_switches(jan_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["baseline", "--method", "dfs", "--data", str(jan_csv), "--event", EVENT, "--json",
               "--adjustment", "--settlement", "net", "--event-day", "2024-01-30"])  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert payload["method_version"].endswith("+adjustment+net")
    assert payload["exclusions"] == [{"day": "2024-01-30", "reason": "earlier event day"}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,kwh\n", "line 1, column header: expected 'period_start,import_kwh[,export_kwh]'"),
        ("period_start,import_kwh\n2024-01-31T17:00:00+00:00,abc\n",
         "line 2, column import_kwh: not a number: 'abc'"),
        ("period_start,import_kwh\n2024-01-31T17:00:00,1\n",
         "line 2, column period_start: needs a UTC offset"),
        ("period_start,import_kwh\n2024-01-31T17:10:00+00:00,1\n",
         "line 2, column period_start: 2024-01-31T17:10:00+00:00 is not on a 30-min boundary"),
        ("period_start,import_kwh,export_kwh\n2024-01-31T17:00:00+00:00,1\n",
         "line 2, column export_kwh: expected 3 columns, got 2"),
        ("period_start,import_kwh\n2024-01-31T17:00:00Z,1\n2024-01-31T17:00:00+00:00,1\n",
         "line 3, column period_start: period 2024-01-31T17:00:00+00:00 appears twice"),
        ("period_start,import_kwh\n2024-01-31T17:00:00Z,-1\n",
         "line 2, column import_kwh: must be >= 0 kWh"),
        ("period_start,import_kwh\nyesterday,1\n",
         "line 2, column period_start: not an ISO 8601 time: 'yesterday'"),
        ("", "line 1, column header: file is empty"),
    ],
)  # fmt: skip
def test_bad_csv_names_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    rc = main(["baseline", "--method", "dfs", "--data", str(path), "--event", EVENT])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--event", "2024-01-31T17:00:00+00:00"], "--event: expected START/END"),
        (["--event", "2024-01-31T17:00/2024-01-31T18:00"], "--event: start needs a UTC offset"),
        (["--event", "2024-01-31T17:15:00Z/2024-01-31T18:00:00Z"], "not on a 30-min boundary"),
        (["--event", EVENT, "--timezone", "Mars/Base"], "--timezone: unknown time zone"),
    ],
)
def test_bad_arguments(
    jan_csv: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    rc = main(["baseline", "--method", "dfs", "--data", str(jan_csv), *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_missing_file_and_insufficient_history(tmp_path: Path, capsys) -> None:
    rc = main(["baseline", "--method", "dfs", "--data", str(tmp_path / "nope.csv"), "--event",
               EVENT])  # fmt: skip
    assert rc == 2 and "--data: cannot read" in capsys.readouterr().err
    path = tmp_path / "short.csv"
    path.write_text("period_start,import_kwh\n2024-01-31T17:00:00Z,1\n2024-01-31T17:30:00Z,\n")
    rc = main(["baseline", "--method", "dfs", "--data", str(path), "--event", EVENT])
    out = capsys.readouterr().out
    assert rc == 1  # computed, but no baseline could be made
    assert "PROBLEM  only 0 eligible working days" in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--country", "XX"], "--country: unknown 'XX'"),
        (["--country", "GB", "--subdivision", "TX"], "--subdivision: 'TX' is not one of GB's"),
        (["--holiday-set", "nerc"], "--holiday-set: 'nerc' needs country US"),
    ],
)
def test_bad_calendar_options_are_named(
    jan_csv: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    rc = main(["baseline", "--method", "elexon-bl01", "--data", str(jan_csv), "--event", EVENT,
               *options])  # fmt: skip
    assert rc == 2
    assert message in capsys.readouterr().err


def test_calendar_options_change_the_days(jan_csv: Path, capsys: pytest.CaptureFixture[str]):
    # 1 Jan 2024 is a bank holiday in England (2.0 kWh: non-working) but a working day for no
    # holidays at all, so counted among the 10 working days it lifts the baseline.
    event = "2024-01-12T17:00:00+00:00/2024-01-12T17:30:00+00:00"
    args = ["baseline", "--method", "elexon-bl01", "--data", str(jan_csv), "--event", event,
            "--json", "--no-adjustment"]  # fmt: skip
    assert main(args) == 0
    gb = json.loads(capsys.readouterr().out)
    assert "2024-01-01" not in gb["days_used"]
    assert main([*args, "--country", "NL"]) == 0  # Nieuwjaarsdag is a holiday there too
    assert "2024-01-01" not in json.loads(capsys.readouterr().out)["days_used"]
    assert main([*args, "--region", "none"]) == 0
    none = json.loads(capsys.readouterr().out)
    assert "2024-01-01" in none["days_used"]
    assert none["periods"][0]["baseline_kwh"] > gb["periods"][0]["baseline_kwh"]
