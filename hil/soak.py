"""The soak: the daemon with every stage on, against the HIL rig at high speed, for days.

`bench/soak.py` runs a simulated week; tests/soak runs a simulated day. One process holds the
rig (SunSpec behind a Modbus fault proxy), the simulated charge point and car, a Mosquitto it
starts on a free port, and the reference aggregator; the daemon is a subprocess
(`python -m hil.soak_daemon`, the real `Daemon`) so it can be killed with SIGKILL and
started again. Both sides run on accelerated clocks anchored to the same real instant.

Faults come on a schedule of simulated times (`week_schedule`, `day_schedule`): Modbus
dropped connections, exception replies, garbage and truncated answers, an unanswering unit
(timeouts); a daily signed turn-down event with a 10-minute broker outage inside one; a
charger reconnect storm; `kill -9` and restart; a clock step (the daemon restarts an hour
behind and is stepped forward, as an NTP step after a boot with a stale clock); a full disk
(the database on a small tmpfs filled up by a ballast file; needs root to mount, else skipped
and said so).

Checked throughout, on what the rig measures: fuse current, export power, battery SoC
against the configured limits (each step over the export limit is listed with its time, its
flows and the one before, and its cause: `export_over_cause`); every event answered and
every delivery report received once, in order; `PRAGMA integrity_check` after each kill and
how much was lost; the daemon's task count, store buffer and outbox depth over time (from
its probe); RSS and bytes written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.config import load_config
from hems.core.clock import AcceleratedClock
from hems.uplink import envelope
from hems.uplink.keys import load_or_create_key
from hil.aggregator import MosquittoBroker, ReferenceAggregator, check_report, find_mosquitto
from hil.chargepoint import SimChargePoint, SimConfig
from hil.demo import seed_meter_history
from hil.ev import EvModel
from hil.faults import ExceptionRule
from hil.home import HomeConfig, HomeState
from hil.rig import HilRig

REPO = Path(__file__).resolve().parents[1]
LONDON = ZoneInfo("Europe/London")
SITE = "demo-home"
FUSE_A = 60.0
EXPORT_LIMIT_W = 3680.0
RESERVE_PCT = 10.0
EXPORT_TOLERANCE_W = 50.0  # a step counts as over the export limit beyond this


# -- the schedule -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    day: int  # 0-based simulated day
    at: dtime  # local time
    what: str  # an action name (Soak.act_<what>)
    arg: Any = None


def _daily(day: int) -> list[Step]:
    return [
        Step(day, dtime(3, 0), "modbus", {"drop_every_n": 25}),
        Step(day, dtime(3, 20), "modbus_clear"),
        Step(day, dtime(8, 0), "modbus", {"exceptions": [ExceptionRule(0, 65536, 4, 1)]}),
        Step(day, dtime(8, 20), "modbus_clear"),
        Step(day, dtime(11, 0), "modbus", {"garbage_every_n": 30, "short_every_n": 45}),
        Step(day, dtime(11, 10), "modbus_clear"),
        Step(day, dtime(13, 0), "modbus", {"silent_units": {2}}),  # the battery times out
        Step(day, dtime(13, 10), "modbus_clear"),
        Step(day, dtime(16, 30), "event", (dtime(17, 30), dtime(18, 30))),
        Step(day, dtime(18, 0), "car_arrives"),
    ]


def day_schedule() -> list[Step]:
    """One simulated day with one of everything the short test asserts on."""
    return [
        *_daily(0),
        Step(0, dtime(10, 13), "kill"),
        Step(0, dtime(12, 0), "charger_storm", 10),
        Step(0, dtime(17, 40), "broker_down"),
        Step(0, dtime(17, 50), "broker_up"),
    ]


def week_schedule() -> list[Step]:
    steps = [s for d in range(7) for s in _daily(d)]
    steps += [
        Step(0, dtime(10, 13), "kill"),
        Step(1, dtime(17, 40), "broker_down"),  # ten minutes inside the day's event
        Step(1, dtime(17, 50), "broker_up"),
        Step(2, dtime(17, 55), "kill"),  # during the event
        Step(3, dtime(12, 0), "charger_storm", 30),
        Step(4, dtime(21, 7), "kill_behind", 3600),  # restarts an hour behind ...
        Step(4, dtime(21, 30), "clock_step", 3600),  # ... and NTP steps it forward
        Step(5, dtime(14, 0), "disk_full"),
        Step(5, dtime(16, 0), "disk_free"),
        Step(6, dtime(2, 2), "kill"),
    ]
    return steps


def _flows(state: HomeState | None, rig: HilRig | None) -> dict[str, Any] | None:
    """One physics step's balance, for the report of a step over a limit."""
    if state is None:
        return None
    out: dict[str, Any] = {
        "sim": state.at.astimezone(LONDON).isoformat(timespec="seconds"),
        "export_w": round(-state.grid_w),
        "pv_available_w": round(state.pv_available_w),
        "pv_w": round(state.pv_w),
        "pv_limit_pct": round(state.pv_limit_pct, 1),
        "load_w": round(state.load_w),
        "external_w": round(state.external_w),
        "battery_w": round(state.battery_w),
        "soc_pct": round(state.soc_pct, 1),
    }
    if rig is not None:
        out["battery_window_w"] = rig.home.battery_window_w
    return out


def export_over_cause(
    now: HomeState,
    before: HomeState | None,
    pv_max_w: float,
    seen_late: Sequence[HomeState] = (),
) -> tuple[str, float | None]:
    """Why a physics step was over the export limit, and the export the commands give.

    The devices as the daemon left them at this step (the battery's power, the PV limit, the
    charger's draw) are put against the previous step's sun and household load: what the
    daemon saw when it decided, if it kept up (the rig's registers change only at a step).
    Within the limit with those: "sun-or-house", the PV's available power rose or the house
    load fell between two readings, which the loop can only answer at the next reading (a
    cloud edge is a step in the rig's model). Over with those too, but within it against an
    older step the daemon is shown to have acted on (`seen_late`: the meter registers it had
    last read when this step came, or those it had read before a battery or PV write since
    the previous step): "daemon-behind", its decision was right for what it had read, and a
    loaded machine kept it a step or more behind the accelerated rig. Over against all of
    them: "commands", the daemon's own doing. The charger counts as commanded even when the
    car itself stopped: conservative, never hides a fault.
    """
    if before is None:
        return "commands", None

    def commanded_w(seen: HomeState) -> float:
        pv_w = min(seen.pv_available_w, pv_max_w * now.pv_limit_pct / 100.0)
        return pv_w - now.battery_w - seen.load_w - now.external_w

    over_w = EXPORT_LIMIT_W + EXPORT_TOLERANCE_W
    export_w = commanded_w(before)
    if export_w <= over_w:
        return "sun-or-house", export_w
    if any(commanded_w(s) <= over_w for s in seen_late):
        return "daemon-behind", export_w
    return "commands", export_w


# -- measuring --------------------------------------------------------------------------------


def proc_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def proc_write_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def slope_per_day(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (simulated hours, value) points, per simulated day."""
    if len(points) < 3 or len({x for x, _ in points}) < 2:
        return None
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope * 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Limit:
    """Steps of the rig's physics over a limit: how many, the longest run, the worst value."""

    name: str
    limit: float
    worst: float | None = None
    steps_over: int = 0
    longest_over_s: float = 0.0
    _run_s: float = 0.0

    def observe(self, value: float, over: bool, dt_s: float, worse: Callable[[float, float], bool]):
        if self.worst is None or worse(value, self.worst):
            self.worst = value
        if over:
            self.steps_over += 1
            self._run_s += dt_s
            self.longest_over_s = max(self.longest_over_s, self._run_s)
        else:
            self._run_s = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "worst": None if self.worst is None else round(self.worst, 2),
            "steps_over": self.steps_over,
            "longest_over_s": round(self.longest_over_s, 1),
        }


@dataclass
class SoakOptions:
    days: float = 7.0
    speed: float = 300.0
    batch_s: float = 1.0  # the store's batch interval (real seconds, as in hems)
    schedule: list[Step] = field(default_factory=week_schedule)
    start: datetime = datetime(2026, 6, 22, 5, 0, tzinfo=LONDON)  # a Monday, 05:00
    # Where in the schedule the run begins (simulated days after `start`): the schedule's
    # days stay counted from `start`, steps before this are skipped; `days` runs from here.
    start_day: float = 0.0
    seed: int = 1
    home_reserve_pct: float = RESERVE_PCT  # the simulated battery's own reserve
    tmpfs: bool | None = None  # database on a tmpfs (needed for the disk-full fault); None: if root
    tmpfs_mib: int = 512
    python: str = sys.executable
    workdir: Path | None = None
    log: Callable[[str], None] = lambda text: print(f"soak: {text}", flush=True)


class Soak:
    def __init__(self, opts: SoakOptions, workdir: Path) -> None:
        self.o = opts
        self.dir = workdir
        self.clock = AcceleratedClock(opts.speed, opts.start + timedelta(days=opts.start_day))
        self.anchor_real = time.time()
        self.anchor_sim = self.clock.now()
        self.db_dir = workdir / "db"
        self.db = self.db_dir / "hems.db"
        self.probe_path = Path(tempfile.mkdtemp(prefix="hems-soak-", dir="/dev/shm")) / "p.jsonl"
        self.guard_trace_path = self.probe_path.with_name("guard.jsonl")  # hil.soak_daemon
        self.cfg_path = workdir / "hems.yaml"
        self.daemon_log = workdir / "daemon.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.rig: HilRig | None = None
        self.broker: MosquittoBroker | None = None
        self.aggregator: ReferenceAggregator | None = None
        self.charger: SimChargePoint | None = None
        self.agg_key = Ed25519PrivateKey.generate()
        self.tmpfs_mounted = False
        self.events: list[dict[str, Any]] = []  # what we sent, in order
        self.kills: list[dict[str, Any]] = []
        self.restarts = 0
        self.rss: list[tuple[int, float, float]] = []  # (process no., sim h, MiB)
        self.write_bytes: dict[int, int] = {}  # pid -> last write_bytes
        self.wb_curve: list[tuple[int, float, int]] = []  # (process no., sim h, write_bytes)
        self.db_sizes: list[tuple[float, int, int]] = []  # (sim h, db bytes, wal bytes)
        self.notes: list[str] = []
        self.disk_full: dict[str, Any] = {}
        self.storm: dict[str, Any] = {}
        self.fuse = Limit("fuse_a", FUSE_A)
        self.export = Limit("export_w", EXPORT_LIMIT_W)
        self.reserve = Limit("soc_pct", RESERVE_PCT)
        self.export_over: list[dict[str, Any]] = []  # each step over, with the one before
        self._prev_state: HomeState | None = None
        self._recent_states: deque[HomeState] = deque(maxlen=30)  # for `_seen_late`
        self._process_no = 0
        self._started_real = 0.0
        self._step_armed = False
        self.clock_step: dict[str, Any] = {}
        self._expected_exit = False  # set while we kill or stop it ourselves
        self.unexpected_exits: list[dict[str, Any]] = []
        self.report_wait_s = 0.0  # simulated s after an event's end until its report is due
        self.ended: datetime | None = None  # the simulated time the run stopped waiting

    # -- sim time helpers --
    def sim_h(self) -> float:
        return (self.clock.now() - self.anchor_sim).total_seconds() / 3600

    def at(self, step: Step) -> datetime:
        day = self.o.start.astimezone(LONDON).date() + timedelta(days=step.day)
        return datetime.combine(day, step.at, LONDON).astimezone(UTC)

    async def sleep_until(self, when: datetime) -> None:
        await self.clock.sleep((when - self.clock.now()).total_seconds())

    # -- setup --
    def write_config(self, sunspec_port: int, broker_port: int) -> None:
        cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
        for device in cfg["devices"]:
            if device["type"] == "sunspec":
                device["port"] = sunspec_port
        cfg["storage"] = {"path": str(self.db), "batch_interval_s": self.o.batch_s}
        cfg["web"]["port"] = free_port()
        cfg["ocpp"]["port"] = self.ocpp_port = free_port()
        cfg["planner"]["forecast"]["base_url"] = "http://127.0.0.1:9"  # offline
        cfg["logging"] = {"level": "info", "format": "json"}
        overlay = yaml.safe_load((REPO / "config" / "demo-aggregator.yaml").read_text())
        overlay["uplink"].update(
            broker_port=broker_port,
            aggregator_public_key=envelope.public_key_text(self.agg_key.public_key()),
        )
        cfg.update(overlay)
        self.cfg_path.write_text(yaml.safe_dump(cfg))

    def mount_tmpfs(self) -> None:
        self.db_dir.mkdir(parents=True, exist_ok=True)
        want = self.o.tmpfs if self.o.tmpfs is not None else os.geteuid() == 0
        if not want:
            return
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.o.tmpfs_mib}m", "tmpfs", str(self.db_dir)],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0:
            self.tmpfs_mounted = True
        else:
            self.notes.append(f"tmpfs not mounted ({r.stderr.strip()}): disk-full skipped")

    def unmount_tmpfs(self) -> None:
        if self.tmpfs_mounted:
            subprocess.run(["umount", "-l", str(self.db_dir)], check=False)
            self.tmpfs_mounted = False

    # -- the daemon process --
    async def start_daemon(self, behind_s: float = 0.0, step_s: float = 0.0) -> None:
        now_sim = self.clock.now() - timedelta(seconds=behind_s)
        args = [
            self.o.python, "-m", "hil.soak_daemon", "-c", str(self.cfg_path),
            "--speed", str(self.o.speed), "--start", now_sim.isoformat(),
            "--anchor", repr(time.time()), "--probe", str(self.probe_path),
            "--guard-trace", str(self.guard_trace_path),
        ]  # fmt: skip
        if step_s:
            args += ["--step-on-usr2", str(step_s)]
        self._started_real = time.time()
        self._step_armed = bool(step_s)
        out = self.daemon_log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *args, cwd=str(REPO), stdout=out, stderr=out
        )
        out.close()
        self._process_no += 1

    async def stop_daemon(self) -> int | None:
        self._expected_exit = True
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        return proc.returncode

    def last_probe(self) -> dict[str, Any] | None:
        try:
            lines = self.probe_path.read_text().splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                return json.loads(line)
        return None

    def probes(self) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(OSError):
            for line in self.probe_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    async def kill(self, behind_s: float = 0.0, step_s: float = 0.0) -> None:
        proc = self.proc
        assert proc is not None
        killed_at = self.clock.now()
        before = self.last_probe()
        self._expected_exit = True
        with contextlib.suppress(ProcessLookupError):  # it may just have ended by itself
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        self.record_writes(proc.pid)
        integrity, newest_ms = await asyncio.to_thread(self._integrity)
        lost_sim_s = (killed_at.timestamp() * 1000 - newest_ms) / 1000 if newest_ms else None
        # One batch: the store's interval in real seconds, at this speed, plus the probe's
        # own period (the newest row may predate the kill by up to one poll cycle too).
        one_batch_sim_s = (self.o.batch_s + 1.0) * self.o.speed
        self.kills.append(
            {
                "sim": killed_at.isoformat(),
                "integrity": integrity,
                "newest_reading_before_kill_s": None if lost_sim_s is None else round(lost_sim_s),
                "one_batch_sim_s": one_batch_sim_s,
                "at_most_one_batch_lost": lost_sim_s is not None and lost_sim_s <= one_batch_sim_s,
                "buffered_at_last_probe": (before or {}).get("store_buffered"),
            }
        )
        self.o.log(f"kill -9 at {killed_at.astimezone(LONDON):%a %H:%M}: integrity {integrity}")
        self.restarts += 1
        await self.start_daemon(behind_s=behind_s, step_s=step_s)
        self._expected_exit = False

    def _integrity(self) -> tuple[str, int | None]:
        conn = sqlite3.connect(str(self.db))
        try:
            result = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
            row = conn.execute("SELECT max(at_ms) FROM readings").fetchone()
            return result, (int(row[0]) if row and row[0] is not None else None)
        finally:
            conn.close()

    def record_writes(self, pid: int) -> None:
        wb = proc_write_bytes(pid)
        if wb is not None:
            self.write_bytes[pid] = max(self.write_bytes.get(pid, 0), wb)

    # -- actions --
    async def act_modbus(self, arg: dict[str, Any]) -> None:
        assert self.rig is not None and self.rig.sunspec_faults is not None
        faults = self.rig.sunspec_faults.faults
        for k, v in arg.items():
            setattr(faults, k, v)

    async def act_modbus_clear(self, _arg: Any) -> None:
        assert self.rig is not None and self.rig.sunspec_faults is not None
        self.rig.sunspec_faults.clear()

    async def act_event(self, arg: tuple[dtime, dtime]) -> None:
        assert self.aggregator is not None
        day = self.clock.now().astimezone(LONDON).date()
        start = datetime.combine(day, arg[0], LONDON).astimezone(UTC)
        end = datetime.combine(day, arg[1], LONDON).astimezone(UTC)
        event_id = f"soak-{day.isoformat()}"
        payload = {
            "event_id": event_id,
            "modification_number": 0,
            "kind": "turn_down",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "import_cap_w": 0.0,
        }
        self.events.append({"event_id": event_id, "end": end})
        await self.aggregator.send_event(SITE, payload)

    async def act_car_arrives(self, _arg: Any) -> None:
        assert self.charger is not None
        ev = self.charger.ev
        now = self.clock.now()
        ev.soc_pct = 35.0
        ev.plug_in_at = now
        next_morning = now.astimezone(LONDON).date() + timedelta(days=1)
        ev.leave_at = datetime.combine(next_morning, dtime(7, 30), LONDON).astimezone(UTC)

    async def act_broker_down(self, _arg: Any) -> None:
        assert self.broker is not None
        await self.broker.stop()

    async def act_broker_up(self, _arg: Any) -> None:
        assert self.broker is not None
        await self.broker.start()

    async def act_kill(self, _arg: Any) -> None:
        await self.kill()

    async def act_kill_behind(self, behind_s: float) -> None:
        await self.kill(behind_s=behind_s, step_s=behind_s)

    async def act_clock_step(self, _arg: Any) -> None:
        if not self._step_armed:  # not started by kill_behind: SIGUSR2 would end it
            self.clock_step = {"skipped": "the daemon was not started behind"}
            return
        # Only once the daemon runs (its probe has written since it started): before its
        # handler is installed SIGUSR2 would end it.
        started = self._started_real
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = self.last_probe()
            if p is not None and p["real_s"] > started:
                break
            await asyncio.sleep(0.1)
        assert self.proc is not None
        before = self.last_probe()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGUSR2)
        await asyncio.sleep(2.0)  # real seconds: a few probe lines
        after = self.last_probe()
        self.clock_step = {
            "rig": self.clock.now().isoformat(),
            "daemon_before": (before or {}).get("sim"),
            "daemon_after": (after or {}).get("sim"),
        }

    async def act_charger_storm(self, n: int) -> None:
        assert self.charger is not None
        charger = self.charger
        before = charger.connects
        t0 = time.monotonic()
        for _ in range(n):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(charger.connected.wait(), 20)
            await charger.disconnect()
            # `connected` clears only when the charger's session has unwound: wait for that,
            # or the next wait sees the connection just dropped as still up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(charger.dropped.wait(), 20)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(charger.connected.wait(), 20)
        self.storm = {
            "disconnects": n,
            "reconnected": self.charger.connects - before,
            "wall_s": round(time.monotonic() - t0, 1),
            "connected_after": self.charger.connected.is_set(),
        }

    async def act_disk_full(self, _arg: Any) -> None:
        if not self.tmpfs_mounted:
            self.disk_full = {"skipped": "no tmpfs (needs root to mount)"}
            return
        ballast = self.db_dir / "ballast"
        free = shutil.disk_usage(self.db_dir).free
        with ballast.open("wb") as f:
            chunk = b"\0" * (1 << 20)
            with contextlib.suppress(OSError):
                while free > 0:
                    f.write(chunk[: min(len(chunk), free)])
                    free -= len(chunk)
        self.disk_full = {
            "filled_at": self.clock.now().isoformat(),
            "free_bytes": shutil.disk_usage(self.db_dir).free,
            "before": self.last_probe(),
        }

    async def act_disk_free(self, _arg: Any) -> None:
        if not self.tmpfs_mounted:
            return
        self.disk_full["during"] = self.last_probe()
        (self.db_dir / "ballast").unlink(missing_ok=True)
        # Recovery: the next flush after the space came back empties the buffer.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            p = self.last_probe() or {}
            if p.get("store_error") is None and (p.get("store_buffered") or 0) < 5000:
                break
        self.disk_full["after"] = self.last_probe()

    # -- background checks --
    def on_step(self, state: HomeState) -> None:
        dt = self.rig.step_s if self.rig is not None else 0.0
        amps = max(state.current_phase_a)
        self.fuse.observe(amps, amps > FUSE_A + 0.5, dt, lambda a, b: a > b)
        export_w = -state.grid_w
        over = export_w > EXPORT_LIMIT_W + EXPORT_TOLERANCE_W
        self.export.observe(export_w, over, dt, lambda a, b: a > b)
        if over:
            pv_max_w = self.rig.home.config.pv_inverter_max_w if self.rig is not None else 0.0
            seen_late = self._seen_late(self._prev_state)
            cause, commanded_w = export_over_cause(state, self._prev_state, pv_max_w, seen_late)
            self.export_over.append(
                {
                    "sim": state.at.astimezone(LONDON).isoformat(timespec="seconds"),
                    "export_w": round(export_w),
                    "cause": cause,
                    "export_by_commands_w": None if commanded_w is None else round(commanded_w),
                    "now": _flows(state, self.rig),
                    "before": _flows(self._prev_state, None),
                    "seen_late": [_flows(s, None) for s in seen_late],
                }
            )
            if cause == "commands" and self._prev_state is not None:
                # What the daemon saw and sent between the two steps: tells a fault apart.
                self.export_over[-1]["daemon_cycles"] = self._guard_cycles(
                    self._prev_state.at, state.at
                )
        self._prev_state = state
        self._recent_states.append(state)
        self.reserve.observe(state.soc_pct, state.soc_pct < RESERVE_PCT - 1, dt, lambda a, b: a < b)

    def _guard_cycles(self, since: datetime, until: datetime, most: int = 40) -> list[Any]:
        """The daemon's control cycles (hil.soak_daemon --guard-trace) from `since` to `until`,
        the last `most` of them."""
        out: list[Any] = []
        with contextlib.suppress(OSError):
            for line in self.guard_trace_path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    cycle = json.loads(line)
                    if since <= datetime.fromisoformat(cycle["sim"]) <= until:
                        out.append(cycle)
        return out[-most:]

    def _seen_late(self, before: HomeState | None) -> list[HomeState]:
        """Steps older than `before` that the daemon is shown to have been acting on when the
        step after `before` came: the meter registers it had read last, and those it had read
        before each battery or PV write since `before` (the rig's SunSpec server records both)."""
        if self.rig is None or before is None:
            return []
        server = self.rig.sunspec
        ids = server.unit_ids
        times: set[datetime] = set()
        last_read = server.read_state_at.get(ids.meter)
        if last_read is not None:
            times.add(last_read)
        for uid in (ids.pv, ids.battery):
            written = server.write_basis.get(uid)
            if written is not None and written[0] == before.at and written[1] is not None:
                times.add(written[1])
        return [s for s in self._recent_states if s.at in times and s.at < before.at]

    async def sampler(self) -> None:
        while True:
            proc = self.proc
            if proc is not None and proc.returncode is None:
                rss = proc_rss_mib(proc.pid)
                if rss is not None:
                    self.rss.append((self._process_no, self.sim_h(), rss))
                self.record_writes(proc.pid)
                wb = self.write_bytes.get(proc.pid)
                if wb is not None:
                    self.wb_curve.append((self._process_no, self.sim_h(), wb))
            with contextlib.suppress(OSError):
                wal = self.db.with_name(self.db.name + "-wal")
                self.db_sizes.append(
                    (
                        self.sim_h(),
                        self.db.stat().st_size,
                        wal.stat().st_size if wal.exists() else 0,
                    )
                )
            await asyncio.sleep(1.0)

    async def watcher(self) -> None:
        """A daemon that ends by itself is recorded (exit code, time) and started again, as
        systemd's Restart=always would."""
        while True:
            proc = self.proc
            if proc is None or self._expected_exit:
                await asyncio.sleep(0.2)
                continue
            code = await proc.wait()
            if self.proc is proc and not self._expected_exit:
                tail = self.daemon_log.read_text(errors="replace").splitlines()[-3:]
                self.unexpected_exits.append(
                    {"sim": self.clock.now().isoformat(), "exit_code": code, "log_tail": tail}
                )
                self.o.log(f"daemon exited by itself with {code}; restarting")
                self.record_writes(proc.pid)
                await self.start_daemon()

    async def run_schedule(self, end: datetime) -> None:
        steps = sorted(
            (s for s in self.o.schedule if self.at(s) < end and self.at(s) > self.clock.now()),
            key=self.at,
        )
        for step in steps:
            await self.sleep_until(self.at(step))
            action: Callable[[Any], Awaitable[None]] = getattr(self, f"act_{step.what}")
            self.o.log(f"{self.clock.now().astimezone(LONDON):%a %H:%M} {step.what}")
            await action(step.arg)
        await self.sleep_until(end)

    def report_due(self, event: dict[str, Any]) -> datetime:
        """When the event's delivery report is due: its end, the configured report delay and
        two flex check intervals (the meter data of the last period come with the next one)."""
        return event["end"] + timedelta(seconds=self.report_wait_s)

    async def wait_reports(self, timeout_s: float) -> None:
        """Every event whose report is due by now: wait (real seconds) until it is in."""
        assert self.aggregator is not None
        rec = self.aggregator.site(SITE)
        now = self.clock.now()
        due = {e["event_id"] for e in self.events if self.report_due(e) <= now}

        def done() -> bool:
            got = {m["payload"].get("event_id") for m in rec.of("delivery_report")}
            return due <= got

        with contextlib.suppress(TimeoutError):
            await self.aggregator.wait_for(done, timeout_s)

    # -- the run --
    async def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        mosquitto = find_mosquitto()
        if mosquitto is None:
            raise RuntimeError("soak: needs the mosquitto broker (apt-get install mosquitto)")
        self.mount_tmpfs()
        try:
            return await self._run(mosquitto, t0)
        finally:
            self.unmount_tmpfs()
            shutil.rmtree(self.probe_path.parent, ignore_errors=True)

    async def _run(self, mosquitto: str, t0: float) -> dict[str, Any]:
        o = self.o
        # The home's own self-consumption stops at the same 10 % as the daemon's reserve: at
        # these speeds the battery's control timeout (simulated seconds) lapses between two
        # of the daemon's writes, and the battery then runs on its own logic.
        home_cfg = HomeConfig(
            seed=o.seed,
            latitude_deg=51.5,
            longitude_deg=-0.1,
            battery_reserve_pct=o.home_reserve_pct,
        )
        rig = self.rig = HilRig(self.clock, home_config=home_cfg)
        rig.on_step(self.on_step)
        self.broker = MosquittoBroker(mosquitto, self.dir / "mosquitto")
        await self.broker.start()
        end = o.start + timedelta(days=o.start_day + o.days)
        try:
            async with rig:
                self.write_config(rig.sunspec_port, self.broker.port)
                cfg = load_config(self.cfg_path)
                self.report_wait_s = cfg.flex.report_delay_s + 2 * cfg.flex.check_interval_s
                gateway = load_or_create_key(cfg.uplink.key_path(Path(cfg.storage.path)))
                await seed_meter_history(self.db, "grid", self.clock.now(), days=60, seed=o.seed)
                self.aggregator = ReferenceAggregator(
                    "127.0.0.1",
                    self.broker.port,
                    key=self.agg_key,
                    gateway_keys={SITE: gateway.public_key()},
                    clock=self.clock,
                    client_id=f"soak-aggregator-{self.broker.port}",
                    resend_after_s=30,
                    reissue_after_s=100,
                )
                ev = EvModel(
                    battery_kwh=60, soc_pct=35, max_ac_power_w=7400, phases=1,
                    plug_in_at=end + timedelta(days=1), leave_at=end + timedelta(days=2),
                )  # fmt: skip
                self.charger = SimChargePoint(
                    SimConfig(
                        url=f"ws://127.0.0.1:{self.ocpp_port}",
                        identity="DEMO-CP1",
                        phases=1,
                        max_current_a=32,
                        meter_interval_s=10,
                    ),
                    self.clock,
                    ev=ev,
                    on_power=lambda w: rig.home.set_external_load_w("wallbox", w),
                )
                await self.start_daemon()
                async with asyncio.TaskGroup() as tg:
                    bg = [
                        tg.create_task(self.aggregator.run()),
                        tg.create_task(self.charger.run()),
                        tg.create_task(self.sampler()),
                        tg.create_task(self.watcher()),
                    ]
                    await self.run_schedule(end)
                    await self.wait_reports(timeout_s=60)
                    self.ended = self.clock.now()
                    # The daemon stops first: its last probe and exit are with its peers up.
                    self.record_writes(self.proc.pid if self.proc else -1)
                    final = self.last_probe()
                    code = await self.stop_daemon()
                    for task in bg:
                        task.cancel()
                integrity, _ = await asyncio.to_thread(self._integrity)
        finally:
            await self.stop_daemon()
            await self.broker.stop()
        return self.report(time.monotonic() - t0, code, integrity, final)

    # -- the report --
    def report(
        self, wall_s: float, exit_code: int | None, integrity: str, final: dict[str, Any] | None
    ) -> dict[str, Any]:
        o = self.o
        assert self.aggregator is not None
        rec = self.aggregator.site(SITE)
        responses: dict[str, list[str]] = {}
        for m in rec.of("event_response"):
            p = m["payload"]
            responses.setdefault(str(p.get("event_id")), []).append(str(p.get("status")))
        reports = rec.of("delivery_report")
        events = []
        ended = self.ended or self.clock.now()
        for e in self.events:
            mine = [m for m in reports if m["payload"].get("event_id") == e["event_id"]]
            due_at = self.report_due(e)
            # A report due after the run stopped is not yet due, not missing.
            if mine:
                report_status = "received"
            else:
                report_status = "not yet due" if due_at > ended else "missing"
            events.append(
                {
                    "event_id": e["event_id"],
                    "answers": responses.get(e["event_id"], []),
                    "reports": len(mine),
                    "report_due": due_at.isoformat(),
                    "report_status": report_status,
                    "report_problems": [q for m in mine for q in check_report(m["payload"])],
                }
            )
        order = [m["payload"].get("event_id") for m in reports]
        seqs = [m["seq"] for m in reports]
        in_order = order == [e["event_id"] for e in self.events if e["event_id"] in order] and (
            seqs == sorted(seqs)
        )
        probes = self.probes()
        tasks = [p["tasks"] for p in probes if p.get("tasks") is not None]
        buffered = [p["store_buffered"] or 0 for p in probes]
        outbox = [p["outbox"] or 0 for p in probes if p.get("outbox") is not None]
        last_no = max((n for n, _, _ in self.rss), default=0)
        last_seg = [(h, m) for n, h, m in self.rss if n == last_no]
        warm = [(h, m) for h, m in last_seg if h - last_seg[0][0] >= 1.0] if last_seg else []
        total_wb = sum(self.write_bytes.values())
        # Steady state: the slope of the longest-lived process's write_bytes after its
        # first tenth (start-up writes: migrations, the first plan, TLS keys).
        by_no: dict[int, list[tuple[float, float]]] = {}
        for n, h, wb in self.wb_curve:
            by_no.setdefault(n, []).append((h, float(wb)))
        longest = max(by_no.values(), key=lambda pts: pts[-1][0] - pts[0][0], default=[])
        if longest:
            h0 = longest[0][0] + (longest[-1][0] - longest[0][0]) / 10
            longest = [pt for pt in longest if pt[0] >= h0]
        steady = slope_per_day(longest)
        sim_days = o.days
        db_end = self.db_sizes[-1] if self.db_sizes else (0, 0, 0)
        return {
            # A run whose daemon never came up (a config it refused, an import error) still
            # has invariants: the rig's physics alone. These say whether it is a soak at all.
            "daemon_ran": bool(probes),
            "daemon_probes": len(probes),
            "simulated_days": sim_days,
            "speed": o.speed,
            "wall_s": round(wall_s, 1),
            "store_batch_interval_real_s": o.batch_s,
            "db_on_tmpfs": self.tmpfs_mounted,
            "invariants": {
                "fuse": self.fuse.report(),
                "export": self.export.report(),
                "export_steps_over_by_commands": sum(
                    e["cause"] == "commands" for e in self.export_over
                ),
                "export_steps_over_daemon_behind": sum(
                    e["cause"] == "daemon-behind" for e in self.export_over
                ),
                "export_over": self.export_over,
                "reserve": self.reserve.report(),
                "physics_step_s": self.rig.step_s if self.rig else None,
            },
            "events": events,
            "all_answered": all(any(a == "accepted" for a in e["answers"]) for e in events),
            "reports_exactly_once": all(
                e["reports"] == 1 for e in events if e["report_status"] != "not yet due"
            ),
            "reports_not_yet_due": [
                e["event_id"] for e in events if e["report_status"] == "not yet due"
            ],
            "reports_missing": [e["event_id"] for e in events if e["report_status"] == "missing"],
            "ended": ended.isoformat(),
            "reports_in_order": in_order,
            "report_replays_deduplicated": rec.duplicates,
            "invalid_gateway_messages": len(rec.invalid),
            "kills": self.kills,
            "kills_survived": sum(k["integrity"] == "ok" for k in self.kills),
            "unexpected_exits": self.unexpected_exits,
            "final_exit_code": exit_code,
            "final_integrity": integrity,
            "charger_storm": self.storm,
            "clock_step": self.clock_step,
            "disk_full": self.disk_full,
            "tasks": {
                "first": tasks[0] if tasks else None,
                "max": max(tasks, default=None),
                "last": tasks[-1] if tasks else None,
            },
            "tasks_curve": [
                (p["sim"][:16], p["tasks"], p["store_buffered"], p["outbox"])
                for p in probes[:: max(1, len(probes) // 60)]
            ],
            "store_buffer_max": max(buffered, default=None),
            "store_dropped": (final or {}).get("store_dropped"),
            "outbox_max": max(outbox, default=None),
            "outbox_last": outbox[-1] if outbox else None,
            "rss_mib": {
                "last": round(last_seg[-1][1], 1) if last_seg else None,
                "max": round(max((m for _, _, m in self.rss), default=0.0), 1),
                "slope_mib_per_day_last_process": (
                    None if (s := slope_per_day(warm)) is None else round(s, 2)
                ),
                "last_process_sim_h": round(last_seg[-1][0] - last_seg[0][0], 1) if last_seg else 0,
                "curve": [
                    (round(h, 2), round(m, 1))
                    for _, h, m in self.rss[:: max(1, len(self.rss) // 200)]
                ],
            },
            "writes": {
                "write_bytes_total": total_wb,
                "write_bytes_per_sim_day": round(total_wb / sim_days) if sim_days else None,
                "write_bytes_per_sim_day_steady": None if steady is None else round(steady),
                "commits_by_caller": (final or {}).get("commits"),
                "db_bytes_end": db_end[1],
                "wal_bytes_end": db_end[2],
                "wal_bytes_max": max((w for _, _, w in self.db_sizes), default=0),
                "daemon_log_bytes": self.daemon_log.stat().st_size
                if self.daemon_log.exists()
                else 0,
            },
            "notes": self.notes,
        }


async def run_soak(opts: SoakOptions) -> dict[str, Any]:
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)
        return await Soak(opts, opts.workdir).run()
    with tempfile.TemporaryDirectory(prefix="hems-soak-") as tmp:
        return await Soak(opts, Path(tmp)).run()
