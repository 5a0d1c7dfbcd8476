"""Issue 2 benchmark: start-up and memory of the daemon against the HIL rig.

* time from process start to READY=1 and to the first reading committed to SQLite
  (default batch interval, 5 s: the figure a user sees);
* RSS of the daemon process after one hour of simulated time at 60× (one real minute),
  polling three SunSpec units every simulated second.

Run: .venv/bin/python bench/bench_daemon.py [--minutes 1] [--speed 60] [--full] [--python P]

The daemon's own RSS is the figure; its child processes' RSS (the planner's solver process,
hems/planning/solver_process.py) is printed beside it.

`--python` runs the daemon under another interpreter, e.g. a venv with only
requirements.lock (what a Pi installs): the dev venv's extra packages (rich, pulled in by
import-linter, is imported by structlog when present) add a few MiB to the RSS.

`--probe DIR` runs the daemon under bench/daemon_probe.py and has it write its sys.modules and
/proc/self/smaps (with `--tracemalloc` also a tracemalloc snapshot) into DIR after the first
reading and at the end, after the RSS is read: two runs' `end.smaps` compared mapping by
mapping say which library or heap the MiB between two configurations are in (README,
Benchmarks). Under `--tracemalloc` the daemon is several times slower and larger.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
sys.path.insert(0, str(REPO))

from hems.core.clock import AcceleratedClock  # noqa: E402
from hil.rig import HilRig  # noqa: E402

CONFIG = """\
site: {{id: bench}}
devices:
  - {{type: sunspec, id: pv, role: pv, host: 127.0.0.1, port: {port}, unit_id: 1}}
  - {{type: sunspec, id: battery, role: battery, host: 127.0.0.1, port: {port}, unit_id: 2}}
  - {{type: sunspec, id: grid, role: grid, host: 127.0.0.1, port: {port}, unit_id: 3}}
storage: {{path: {db}, batch_interval_s: {batch}}}
web: {{host: 127.0.0.1, port: {web}}}
logging: {{level: warning, format: json}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rollup_mib(pid: int) -> dict[str, float]:
    """Pss (shared library pages split among the processes mapping them) and the process's own
    anonymous memory (Private_Dirty) from /proc/PID/smaps_rollup: RSS counts a shared
    library's resident pages in full."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Private_Dirty"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def children_rss_mib(pid: int) -> float:
    """RSS of the daemon's child processes (the planner's solver process)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += rss_mib(int(child))
            except OSError:  # ended meanwhile
                pass
    return total


def count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.Error:
        return 0


def full_config(
    port: int, db: Path, web: int, batch_s: float, uplink: dict[str, object] | None = None
) -> str:
    """config/demo.yaml with every stage on (planner, control, OCPP), on this rig's ports;
    with `uplink` (broker_port, aggregator_public_key) also config/demo-aggregator.yaml's
    uplink and flex sections, as hil/soak.py does."""
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for device in cfg["devices"]:
        if device["type"] == "sunspec":  # the wallbox entry connects to us instead
            device["port"] = port
    cfg["storage"] = {"path": str(db), "batch_interval_s": batch_s}
    cfg["web"]["port"] = web
    cfg["ocpp"]["port"] = free_port()
    cfg["planner"]["forecast"]["base_url"] = "http://127.0.0.1:9"  # offline
    cfg["logging"] = {"level": "warning", "format": "json"}
    if uplink is not None:
        overlay = yaml.safe_load((REPO / "config" / "demo-aggregator.yaml").read_text())
        overlay["uplink"].update(uplink)
        cfg.update(overlay)
    return yaml.safe_dump(cfg)


PROBE: Path | None = None  # --probe: bench/daemon_probe.py dumps into this folder
PROBE_TRACEMALLOC = False


async def probe(proc: asyncio.subprocess.Process, name: str) -> None:
    """Ask bench/daemon_probe.py for its sys.modules, smaps (and tracemalloc snapshot)."""
    assert PROBE is not None
    (PROBE / "name").write_text(name)
    proc.send_signal(signal.SIGUSR1)
    for _ in range(3000):  # a snapshot of a traced daemon takes a few seconds
        if (PROBE / f"{name}.done").exists():
            return
        await asyncio.sleep(0.01)


async def run(
    minutes: float, speed: float, batch_s: float, full: bool, aggregator: bool = False
) -> dict[str, float]:
    start = datetime(2026, 6, 21, 9, 0, tzinfo=UTC)
    clock = AcceleratedClock(speed, start)
    with tempfile.TemporaryDirectory() as tmp:
        if aggregator:
            async with AggregatorSide(clock, Path(tmp)) as side:
                return await _run(minutes, speed, batch_s, full, clock, Path(tmp), side)
        return await _run(minutes, speed, batch_s, full, clock, Path(tmp), None)


class AggregatorSide:
    """A Mosquitto on a free port and the reference aggregator (hil/aggregator.py) with its
    own key, as `hil/demo.py --aggregator` runs them; 60 days of simulated meter history
    seeded for the flex baseline (hil/demo.py's seed_meter_history)."""

    def __init__(self, clock: AcceleratedClock, tmp: Path) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from hil.aggregator import MosquittoBroker, find_mosquitto

        binary = find_mosquitto()
        if binary is None:
            raise SystemExit("--aggregator needs mosquitto on PATH")
        self.clock, self.tmp = clock, tmp
        self.key = Ed25519PrivateKey.generate()
        self.broker = MosquittoBroker(binary, tmp / "mosquitto")
        self.task: asyncio.Task[None] | None = None

    def uplink(self) -> dict[str, object]:
        from hems.uplink import envelope

        return {
            "broker_port": self.broker.port,
            "aggregator_public_key": envelope.public_key_text(self.key.public_key()),
        }

    async def start_aggregator(self, cfg_path: Path) -> None:
        """After the config is written: the gateway key exists then (made next to storage)."""
        from hems.config import load_config
        from hems.uplink.keys import load_or_create_key
        from hil.aggregator import ReferenceAggregator
        from hil.demo import seed_meter_history

        cfg = load_config(cfg_path)
        storage = Path(cfg.storage.path)
        gateway = load_or_create_key(cfg.uplink.key_path(storage))
        await seed_meter_history(storage, "grid", self.clock.now(), days=60)
        agg = ReferenceAggregator(
            "127.0.0.1", self.broker.port, key=self.key,
            gateway_keys={cfg.site.id: gateway.public_key()}, clock=self.clock,
            client_id=f"bench-aggregator-{self.broker.port}",
        )  # fmt: skip
        self.task = asyncio.create_task(agg.run())

    async def __aenter__(self) -> AggregatorSide:
        await self.broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.broker.stop()


async def _run(
    minutes: float, speed: float, batch_s: float, full: bool,
    clock: AcceleratedClock, tmp_dir: Path, side: AggregatorSide | None,
) -> dict[str, float]:  # fmt: skip
    if True:
        tmp = str(tmp_dir)
        db = Path(tmp) / "hems.db"
        notify_path = Path(tmp) / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.setblocking(False)
        async with HilRig(clock, fault_proxy=False) as rig:
            cfg = Path(tmp) / "hems.yaml"
            cfg.write_text(
                full_config(
                    rig.sunspec_port, db, free_port(), batch_s, side.uplink() if side else None
                )
                if full
                else CONFIG.format(port=rig.sunspec_port, db=db, web=free_port(), batch=batch_s)
            )
            if side is not None:
                await side.start_aggregator(cfg)
            env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
            entry = ["-m", "hems.cli"]
            if PROBE is not None:
                entry = [str(REPO / "bench" / "daemon_probe.py")]
                env["HEMS_PROBE_DIR"] = str(PROBE)
                env["HEMS_PROBE_TRACEMALLOC"] = "1" if PROBE_TRACEMALLOC else "0"
            t0 = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                PYTHON, *entry, "run", "-c", str(cfg),
                "--speed", str(speed), "--start", clock.now().isoformat(),
                env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            ready_s = first_s = float("nan")
            while first_s != first_s:  # NaN until the first committed reading
                try:
                    if notify.recv(64).startswith(b"READY=1"):
                        ready_s = time.monotonic() - t0
                except BlockingIOError:
                    pass
                if count(db) > 0:
                    first_s = time.monotonic() - t0
                await asyncio.sleep(0.02)
            if PROBE is not None:
                await probe(proc, "first")
            await asyncio.sleep(max(0.0, minutes * 60 - (time.monotonic() - t0)))
            rss = rss_mib(proc.pid)
            rollup = rollup_mib(proc.pid)
            child_rss = children_rss_mib(proc.pid)
            rows = count(db)
            if PROBE is not None:
                await probe(proc, "end")
            proc.terminate()
            await proc.wait()
            notify.close()
    return {
        "ready_s": ready_s,
        "first_reading_s": first_s,
        "rss_mib": rss,
        "pss_mib": rollup.get("Pss", float("nan")),
        "private_dirty_mib": rollup.get("Private_Dirty", float("nan")),
        "child_rss_mib": child_rss,
        "readings": rows,
        "simulated_h": minutes * speed / 60,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=1.0, help="real minutes to run")
    p.add_argument("--speed", type=float, default=60.0)
    p.add_argument("--batch-s", type=float, default=5.0)
    p.add_argument("--python", default=None, help="interpreter for the daemon (default: this one)")
    p.add_argument(
        "--full", action="store_true", help="every stage on (config/demo.yaml: planner, control)"
    )
    p.add_argument(
        "--aggregator",
        action="store_true",
        help="with --full: also the uplink and flex (config/demo-aggregator.yaml), a Mosquitto "
        "on a free port and the reference aggregator (hil/aggregator.py)",
    )
    p.add_argument(
        "--probe",
        type=Path,
        default=None,
        help="folder: run the daemon under bench/daemon_probe.py and dump its sys.modules and "
        "smaps after the first reading and at the end (after the RSS is read)",
    )
    p.add_argument(
        "--tracemalloc", action="store_true", help="with --probe: tracemalloc snapshots too"
    )
    a = p.parse_args()
    global PROBE, PROBE_TRACEMALLOC
    PROBE, PROBE_TRACEMALLOC = a.probe, a.tracemalloc
    if PROBE is not None:
        PROBE.mkdir(parents=True, exist_ok=True)
    if a.aggregator and not a.full:
        p.error("--aggregator needs --full")
    if a.python:
        global PYTHON
        PYTHON = a.python
    r = asyncio.run(run(a.minutes, a.speed, a.batch_s, a.full, a.aggregator))
    label = "config/demo.yaml, every stage" if a.full else "3 SunSpec units"
    if a.aggregator:
        label += " + uplink and flex (config/demo-aggregator.yaml)"
    print(f"configuration: {label}")
    print("| figure | value |\n|---|---|")
    print(f"| start → READY=1 | {r['ready_s']:.2f} s |")
    print(
        f"| start → first reading in SQLite (batch {a.batch_s:g} s) "
        f"| {r['first_reading_s']:.2f} s |"
    )
    print(
        f"| RSS after {r['simulated_h']:.1f} h simulated at {a.speed:g}× | {r['rss_mib']:.1f} MiB |"
    )
    print(
        f"| the same: Pss / Private_Dirty | {r['pss_mib']:.1f} / {r['private_dirty_mib']:.1f} MiB |"
    )
    print(f"| RSS of its child processes (the planner's solver) | {r['child_rss_mib']:.1f} MiB |")
    print(f"| readings stored | {r['readings']} |")


if __name__ == "__main__":
    main()
