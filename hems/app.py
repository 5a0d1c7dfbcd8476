"""The composition root: builds everything from the config and runs it in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from hems.config import Config
from hems.core.clock import Clock
from hems.core.state import SiteState
from hems.devices.factory import DeviceLayer, build_devices
from hems.sdnotify import Notifier, watchdog_interval_s
from hems.store.db import Database
from hems.store.timeseries import ReadingStore
from hems.web.server import WebServer

log = structlog.get_logger(__name__)


class Service(Protocol):
    async def run(self) -> None: ...


class Daemon:
    """One asyncio process: devices → site state → store → web page (and later stages)."""

    def __init__(self, cfg: Config, clock: Clock, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.state = SiteState(clock)
        self.db: Database | None = None
        self.store: ReadingStore | None = None
        self.web: WebServer | None = None
        self.services: dict[str, Service] = {}
        self.layer = DeviceLayer()
        self.started = asyncio.Event()
        self._healthy: Callable[[], bool] = lambda: True

    async def run(self) -> None:
        cfg = self.cfg
        async with contextlib.AsyncExitStack() as stack:
            self.db = await Database.open(cfg.storage.path)
            stack.push_async_callback(self.db.close)
            self.store = ReadingStore(
                self.db,
                self.clock,
                batch_interval_s=cfg.storage.batch_interval_s,
                raw_retention_h=cfg.storage.raw_retention_h,
                rollup_retention_days=cfg.storage.rollup_retention_days,
            )
            self.state.add_listener(self.store.add)

            self.layer = build_devices(cfg, self.state, self.clock, self.db)
            self.services.update(self.layer.services)
            for device_id, role in self.state.devices.items():
                self.store.set_role(device_id, str(role))

            scheduler = AsyncIOScheduler(
                timezone=cfg.site.timezone,
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
            )
            scheduler.add_job(self.store.apply_retention, IntervalTrigger(hours=1), id="retention")
            scheduler.start()
            stack.callback(scheduler.shutdown, wait=False)

            if cfg.web.enabled:
                self.web = WebServer(
                    cfg.web.host, cfg.web.port, self.state, self.clock, self.store, cfg.site.name
                )
                await self.web.start()
                stack.push_async_callback(self.web.stop)

            log.info(
                "hems started",
                site=cfg.site.id,
                devices=len(self.state.devices),
                web=f"http://{cfg.web.host}:{self.web.bound_port}/" if self.web else None,
            )
            self.notifier.ready()
            self.started.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.store.run(), name="store")
                    for name, service in self.services.items():
                        tg.create_task(service.run(), name=name)
                    tg.create_task(self._watchdog(), name="watchdog")
            finally:
                self.notifier.stopping()
                log.info("hems stopping", store=asdict(self.store.stats))

    async def _watchdog(self) -> None:
        # Real seconds: systemd's watchdog counts wall-clock time.
        interval_s = watchdog_interval_s()
        if interval_s is None:
            return
        while True:
            if self._healthy():
                self.notifier.watchdog()
            else:
                log.error("unhealthy: systemd watchdog not fed")
            await asyncio.sleep(interval_s)

    def status(self) -> dict[str, Any]:
        return {"services": sorted(self.services)}
