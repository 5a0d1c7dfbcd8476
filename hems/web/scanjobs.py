"""Scans started from the installer's page, run in the background so the page can show progress.

A scan of eight unit ids can take a minute when units do not answer (2 s per Modbus request,
several requests per unit), far longer than a browser should wait on one POST. The page starts a
job, then shows the job's page, which reloads itself while the job runs: which unit is being
asked, and what the units already done answered.

One scan runs at a time (two scans of the same device would fight for its one or two Modbus
sessions); finished jobs are kept for `KEEP_S` so the page can be reloaded, then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from hems.core.clock import Clock
from hems.devices.modbus.scan import UnitReport, scan_endpoint

log = structlog.get_logger(__name__)

KEEP_S = 900.0
"""A finished job's page stays available this long."""


class ScanBusy(Exception):
    """Another scan is still running."""

    def __init__(self, job_id: str) -> None:
        super().__init__("a scan is already running")
        self.job_id = job_id


@dataclass
class ScanJob:
    job_id: str
    host: str
    port: int
    units: list[int]
    started_at: datetime
    current_unit: int | None = None
    reports: list[UnitReport] = field(default_factory=list)
    finished_at: datetime | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def position(self) -> int:
        """1-based index of the unit being scanned (the number done + 1 while running)."""
        return len(self.reports) + (1 if self.running else 0)


class ScanJobs:
    def __init__(self, clock: Clock, timeout_s: float = 2.0) -> None:
        self._clock = clock
        self._timeout_s = timeout_s
        self._jobs: dict[str, ScanJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, host: str, port: int, units: list[int]) -> ScanJob:
        """Start a scan; ScanBusy when one is still running."""
        self._forget_old()
        for job in self._jobs.values():
            if job.running:
                raise ScanBusy(job.job_id)
        job = ScanJob(secrets.token_urlsafe(12), host, port, units, self._clock.now())
        self._jobs[job.job_id] = job
        self._tasks[job.job_id] = asyncio.create_task(self._run(job), name="installer-scan")
        return job

    def get(self, job_id: str) -> ScanJob | None:
        self._forget_old()
        return self._jobs.get(job_id)

    async def close(self) -> None:
        """Cancel running scans (the web server stops)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, job: ScanJob) -> None:
        def progress(done: list[UnitReport], next_unit: int | None) -> None:
            job.reports = done
            job.current_unit = next_unit

        try:
            job.reports = await scan_endpoint(
                job.host, job.port, job.units, timeout_s=self._timeout_s, on_progress=progress
            )
        except Exception as exc:  # shown on the page; the daemon keeps running
            job.error = f"{type(exc).__name__}: {exc}"
            log.warning("installer scan failed", target=f"{job.host}:{job.port}", error=job.error)
        finally:
            job.current_unit = None
            job.finished_at = self._clock.now()
            self._tasks.pop(job.job_id, None)

    def _forget_old(self) -> None:
        horizon = self._clock.now() - timedelta(seconds=KEEP_S)
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and job.finished_at < horizon:
                del self._jobs[job_id]
