"""Issue 16: the SD-card budget. Bytes the daemon writes per simulated day, every stage on,
1 s telemetry, the database on disk (not tmpfs, so /proc/PID/io write_bytes sees it).

The soak's setup (hil/soak.py: rig, charger, Mosquitto, aggregator) without faults, at a low
speed, with the store's batch interval scaled so that one batch covers the configured
simulated seconds (default 300, the shipped `storage.batch_interval_s`), then extrapolated to a
day. Also: the SQLite files' sizes, and the readings stored per simulated second (the
telemetry really is 1 s).

Run: .venv/bin/python bench/sd_budget.py [--speed 10] [--minutes 3] [--batch-sim-s 300]
     [--trace wal.json]

`--trace PATH`: the daemon also counts the WAL frames of each commit by caller and by table
and index, and the pages each checkpoint copies to the main file (bench/sd_trace/, loaded
into the daemon through PYTHONPATH); written to PATH as JSON and summarised per day.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hems import logs
from hil.soak import LONDON, Soak, SoakOptions


async def measure(
    speed: float, minutes: float, batch_sim_s: float, keep_log: Path | None = None
) -> dict[str, float]:
    days = minutes * 60 * speed / 86400
    opts = SoakOptions(
        days=days,
        speed=speed,
        batch_s=batch_sim_s / speed,
        schedule=[],
        start=datetime(2026, 6, 22, 11, 0, tzinfo=LONDON),
        tmpfs=False,
    )
    with tempfile.TemporaryDirectory(prefix="hems-sd-", dir=Path.home()) as tmp:
        soak = Soak(opts, Path(tmp))
        r = await soak.run()
        with sqlite3.connect(soak.db) as conn:
            # Samples counted by the 1-min roll-ups (the raw table keeps only the newest).
            rows = conn.execute(
                "SELECT sum(n), min(start_ms), max(start_ms) + 60000 FROM rollups "
                "WHERE resolution_s = 60"
            ).fetchone()
            series = conn.execute(
                "SELECT count(DISTINCT device_pk * 1000 + quantity_pk) FROM rollups"
            ).fetchone()[0]
            stored = stored_sizes(conn)
        if keep_log is not None:
            shutil.copyfile(soak.daemon_log, keep_log)
    span_s = (rows[2] - rows[1]) / 1000 if rows[0] else 0.0
    per_day = r["writes"]["write_bytes_per_sim_day_steady"] or 0.0
    for name, n in sorted((r["writes"]["commits_by_caller"] or {}).items(), key=lambda x: -x[1]):
        print(f"commits {name}: {n} ({n / days:.0f} per simulated day)")
    return {
        "simulated_h": days * 24,
        "write_bytes": r["writes"]["write_bytes_total"],
        "write_bytes_per_day": per_day,
        "log_bytes_per_day": r["writes"]["daemon_log_bytes"] / days,
        "readings": rows[0],
        "series": series,
        "readings_per_series_per_s": rows[0] / series / span_s if span_s and series else 0.0,
        "rss_mib": r["rss_mib"]["last"] or 0.0,
        "stored": stored,
    }


def stored_sizes(conn: sqlite3.Connection) -> dict[str, tuple[int, float]]:
    """Rows kept and their mean stored bytes, of the tables written at each replan."""
    out: dict[str, tuple[int, float]] = {}
    for table, cols in (
        ("plans", "problem_json, plan_json, notes_json"),
        ("forecasts", "values_json, flags_json"),
    ):
        total = " + ".join(f"coalesce(length({c}), 0)" for c in cols.split(", "))
        n, mean = conn.execute(f"SELECT count(*), avg({total}) FROM {table}").fetchone()
        out[table] = (int(n), float(mean or 0.0))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--speed", type=float, default=10.0)
    p.add_argument("--minutes", type=float, default=3.0, help="real minutes")
    p.add_argument("--batch-sim-s", type=float, default=300.0)
    p.add_argument("--trace", type=Path, default=None, help="WAL frames per commit (JSON)")
    p.add_argument("--keep-log", type=Path, default=None, help="copy the daemon's log here")
    a = p.parse_args()
    logs.configure("warning", "console")
    if a.trace is not None:
        # Inherited by the daemon's process (hil/soak.py starts it with this environment).
        repo = Path(__file__).resolve().parents[1]
        os.environ["PYTHONPATH"] = str(repo / "bench" / "sd_trace")
        os.environ["HEMS_SD_TRACE"] = str(a.trace.resolve())
        os.environ["HEMS_SD_TRACE_REPO"] = str(repo)
    r = asyncio.run(measure(a.speed, a.minutes, a.batch_sim_s, a.keep_log))
    print("| figure | value |\n|---|---|")
    print(f"| simulated | {r['simulated_h']:.2f} h at {a.speed:g}×, batch {a.batch_sim_s:g} s |")
    print(f"| write_bytes (daemon, whole run) | {r['write_bytes']:,} B |")
    print(f"| per simulated day (steady slope) | {r['write_bytes_per_day'] / 1e6:.1f} MB |")
    print(f"| of which the log file | {r['log_bytes_per_day'] / 1e6:.1f} MB |")
    print(f"| samples rolled up / series | {r['readings']} / {r['series']} |")
    print(f"| readings per series per simulated s | {r['readings_per_series_per_s']:.2f} |")
    for table, (n, mean_b) in r["stored"].items():
        print(f"| {table} rows kept / mean bytes a row | {n} / {mean_b:.0f} |")
    if a.trace is not None and a.trace.exists():
        t = json.loads(a.trace.read_text())
        print_trace(t, r["simulated_h"] / 24)
        print_thread_bytes(t, r["write_bytes"], r["log_bytes_per_day"] * r["simulated_h"] / 24)


def print_trace(t: dict, days: float) -> None:
    """WAL frames (a page + 24 B header) per simulated day, by caller and by object."""
    print("\n| caller | commits/day | frames/day | frames/commit | top objects (frames/day) |")
    print("|---|---|---|---|---|")
    callers = sorted(t["callers"].items(), key=lambda kv: -kv[1]["frames"])
    for name, c in callers:
        objs = sorted(c["objects"].items(), key=lambda kv: -kv[1])[:6]
        top = ", ".join(f"{o} {n / days:.0f}" for o, n in objs)
        per = c["frames"] / c["commits"] if c["commits"] else 0.0
        row = f"| {name} | {c['commits'] / days:.0f} | {c['frames'] / days:.0f} | {per:.1f} |"
        print(f"{row} {top} |")
    frames = sum(c["frames"] for c in t["callers"].values())
    cp = sum(t["checkpoint_pages"].values())
    frame_b = (t.get("page_size") or 4096) + 24  # a page and its frame header
    print(f"\nWAL frames/day {frames / days:.0f} ({frames * frame_b / days / 1e6:.1f} MB); ")
    print(f"checkpoints {t['checkpoints']}, pages copied/day {cp / days:.0f}: ", end="")
    top = sorted(t["checkpoint_pages"].items(), key=lambda kv: -kv[1])[:8]
    print(", ".join(f"{o} {n / days:.0f}" for o, n in top))
    g = t.get("open_generation") or {}
    if g.get("frames"):
        print(f"WAL since the last checkpoint: {g['frames']} frames, {g['pages']} distinct pages")


def print_thread_bytes(t: dict, total_b: int, log_b: float) -> None:
    """The whole run's write_bytes split: the database thread's commits (WAL frames and
    what the page cache adds), its other statements, the log file, the rest."""
    if "thread_write_bytes_commit" not in t:
        return
    commit_b, other_b = t["thread_write_bytes_commit"], t["thread_write_bytes_other"]
    frames_b = t["wal_frame_bytes"]
    rest_b = total_b - commit_b - other_b - log_b
    cold_b, cp_b = t.get("cold_commit_bytes", 0), t.get("cold_checkpoint_bytes", 0)
    print(
        f"commits at real speed (each one's 4 KiB -wal and -shm pages written afresh):"
        f" {cold_b:,} B ({cold_b / max(frames_b, 1):.1f}x the WAL frames);"
        f" checkpoints' 4 KiB blocks of the main file {cp_b:,} B"
    )
    print(
        f"whole run: write_bytes {total_b:,} B = database thread's commits {commit_b:,}"
        f" (WAL frames {frames_b:,}, so {commit_b - frames_b:,} more: 4 KiB pages dirtied"
        f" again, -shm, checkpoints) + its other statements {other_b:,} + log {log_b:,.0f}"
        f" + rest {rest_b:,.0f}"
    )


if __name__ == "__main__":
    main()
