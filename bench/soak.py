"""Issue 16: the soak. The daemon with every stage on against the HIL rig, a simulated week
at high speed, with faults on a schedule (hil/soak.py has the schedule and the checks).

Run: .venv/bin/python bench/soak.py [--days 7] [--speed 300] [--json soak.json]
     .venv/bin/python bench/soak.py --start-day 2.4 --days 0.5   # Wednesday's event only
     .venv/bin/python bench/soak.py --day        # the one-day schedule tests/soak runs

Prints a table and writes the full report (RSS curve included) as JSON. Needs mosquitto;
the disk-full fault needs root (the database goes on a small tmpfs), else it is skipped and
the report says so. As root, with the database on tmpfs, /proc/PID/io write_bytes counts
only the log file: the SD-card figure comes from bench/sd_budget.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hems import logs
from hil.soak import SoakOptions, day_schedule, run_soak, week_schedule


def table(r: dict) -> str:
    inv = r["invariants"]
    rows = [
        ("simulated days / speed / wall", f"{r['simulated_days']:g} d / {r['speed']:g}× / "
         f"{r['wall_s']:.0f} s"),
        ("fuse (max A, steps over, longest over)", _limit(inv["fuse"])),
        ("export (max W, steps over, longest over)", _limit(inv["export"])),
        ("export steps over by the daemon's commands", str(inv["export_steps_over_by_commands"])),
        ("export steps over with the daemon behind the rig",
         str(inv["export_steps_over_daemon_behind"])),
        ("export steps over (time, W, cause)", "; ".join(
            f"{e['sim'][5:16]} {e['export_w']} {e['cause']}" for e in inv["export_over"])
         or "none"),
        ("reserve (min SoC %, steps under, longest under)", _limit(inv["reserve"])),
        ("events answered (accepted)", f"{r['all_answered']} ({len(r['events'])} events)"),
        ("reports exactly once / in order", f"{r['reports_exactly_once']} / "
         f"{r['reports_in_order']} (replays deduplicated: {r['report_replays_deduplicated']})"),
        ("reports missing / not yet due at the end", f"{r['reports_missing'] or 'none'} / "
         f"{r['reports_not_yet_due'] or 'none'}"),
        ("kills survived (integrity ok)", f"{r['kills_survived']} of {len(r['kills'])}"),
        ("at most one batch lost per kill", str(all(k["at_most_one_batch_lost"]
                                                    for k in r["kills"]))),
        ("daemon exits not caused by the soak", str(len(r["unexpected_exits"]))),
        ("final integrity / exit code", f"{r['final_integrity']} / {r['final_exit_code']}"),
        ("asyncio tasks first / max / last", "{first} / {max} / {last}".format(**r["tasks"])),
        ("store buffer max / dropped", f"{r['store_buffer_max']} / {r['store_dropped']}"),
        ("outbox max / last", f"{r['outbox_max']} / {r['outbox_last']}"),
        ("RSS last / max", f"{r['rss_mib']['last']} / {r['rss_mib']['max']} MiB"),
        ("RSS slope (last process, "
         f"{r['rss_mib']['last_process_sim_h']:g} h)",
         f"{r['rss_mib']['slope_mib_per_day_last_process']} MiB/day"),
        ("write_bytes per simulated day", f"{r['writes']['write_bytes_per_sim_day']:,} B"
         + (" (database on tmpfs: log only)" if r["db_on_tmpfs"] else "")),
        ("database / WAL at end", f"{r['writes']['db_bytes_end']:,} / "
         f"{r['writes']['wal_bytes_end']:,} B"),
        ("charger storm", json.dumps(r["charger_storm"])),
        ("disk full", json.dumps({k: v for k, v in r["disk_full"].items()
                                  if k in ("skipped", "free_bytes")})),
    ]  # fmt: skip
    lines = ["| check | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def _limit(x: dict) -> str:
    return f"{x['worst']} (limit {x['limit']:g}), {x['steps_over']}, {x['longest_over_s']:g} s"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--speed", type=float, default=300.0)
    p.add_argument("--batch-s", type=float, default=1.0, help="store batch interval (real s)")
    p.add_argument("--day", action="store_true", help="the one-day schedule (tests/soak)")
    p.add_argument("--start", default=None, help="simulated start, ISO 8601 with offset")
    p.add_argument(
        "--start-day",
        type=float,
        default=0.0,
        help="begin this many simulated days into the schedule (2.45: Wed 15:48); "
        "--days counts from there",
    )
    p.add_argument(
        "--home-reserve-pct",
        type=float,
        default=10.0,
        help="the simulated battery's own reserve (the daemon's is 10 %%)",
    )
    p.add_argument("--json", default="soak.json")
    p.add_argument("--workdir", default=None)
    a = p.parse_args()
    opts = SoakOptions(
        days=a.days if a.days != 7.0 or not a.day else 1.0,
        speed=a.speed,
        batch_s=a.batch_s,
        schedule=day_schedule() if a.day else week_schedule(),
        workdir=Path(a.workdir) if a.workdir else None,
        home_reserve_pct=a.home_reserve_pct,
        start_day=a.start_day,
    )
    if a.start:
        opts.start = datetime.fromisoformat(a.start)
    logs.configure("warning", "console")  # the rig's own chatter; the daemon logs to a file
    r = asyncio.run(run_soak(opts))
    Path(a.json).write_text(json.dumps(r, indent=1, default=str))
    print(table(r))
    print(f"report: {a.json}")
    if not r["daemon_ran"]:
        # The rig ran alone: its invariants say nothing about the daemon.
        print("NOT A SOAK: the daemon never wrote its probe (see its log in the workdir)")
        sys.exit(1)


if __name__ == "__main__":
    main()
