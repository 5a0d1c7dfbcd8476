"""The composition root: builds everything from the config and runs it in one TaskGroup.

devices → SiteState → store → web page; planner → plan → control loop (→ devices);
aggregator ↔ uplink ↔ flex (events, reports) → planner and control. Every stage is optional
except the first; each is one object with `async run()`, started in one TaskGroup so none
outlives the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import httpx
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from hems.app.evsessions import EvSessions
from hems.app.links import ChargerJoin, EnvelopeLink, FlexLink, IntervalSender, answer_event
from hems.app.money import Money
from hems.app.observability import log_guarantees
from hems.app.observability import publish as publish_observability
from hems.config import Config
from hems.core.clock import Clock, RealClock
from hems.core.flex import FlexInstruction
from hems.core.readings import Role
from hems.core.state import SiteState
from hems.core.supervise import StageHealth, supervise
from hems.devices.factory import DeviceLayer, build_devices
from hems.devices.ocpp.events import ChargerBooted, ChargerEvent
from hems.flex.views import recent_reports
from hems.sdnotify import Notifier, watchdog_interval_s
from hems.store.db import Database
from hems.store.evsessions import EvSessionTable
from hems.store.timeseries import ReadingStore
from hems.web import actions, installer
from hems.web.auth import AuthStore, LoginLimiter
from hems.web.pages import SiteView
from hems.web.server import WebServer

if TYPE_CHECKING:
    from hems.control.loop import ControlLoop
    from hems.devices.ocpp.server import OcppCentralSystem
    from hems.flex.service import FlexService
    from hems.planning.service import PlannerService
    from hems.uplink.channel import Uplink
    from hems.uplink.messages import Capabilities, Event, EventDecision

log = structlog.get_logger(__name__)


class Service(Protocol):
    async def run(self) -> None: ...


class Daemon:
    """One asyncio process, built from one config."""

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        notifier: Notifier | None = None,
        *,
        config_path: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path  # given: the installer's page may edit and apply it
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.state = SiteState(clock)
        self.db: Database | None = None
        self.store: ReadingStore | None = None
        self.web: WebServer | None = None
        self.layer = DeviceLayer()
        self.services: dict[str, Service] = {}
        # Stages are imported when enabled (each pulls in its own libraries), so typed here.
        self.ocpp: OcppCentralSystem | None = None
        self.planner: PlannerService | None = None
        self.control: ControlLoop | None = None
        self.flex: FlexService | None = None
        self.uplink: Uplink | None = None
        self.ev_sessions: EvSessions | None = None
        self._charger_join: ChargerJoin | None = None
        self.started = asyncio.Event()
        self.stage_health: dict[str, StageHealth] = {}
        self.restart_requested = asyncio.Event()
        # Set once the control loop has stopped (and written its safe states).
        self._control_stopped = asyncio.Event()

    async def run(self) -> None:
        cfg = self.cfg
        async with contextlib.AsyncExitStack() as stack:
            self.db = db = await Database.open(cfg.storage.path)
            # Deferred journal writes ride on the store's batch; none waits longer than one.
            db.defer_max_s = cfg.storage.batch_interval_s
            stack.push_async_callback(db.close)
            self.store = ReadingStore(
                db,
                self.clock,
                batch_interval_s=cfg.storage.batch_interval_s,
                raw_retention_h=cfg.storage.raw_retention_h,
                raw=cfg.storage.raw_readings,
                rollup_retention_days=cfg.storage.rollup_retention_days,
            )
            self.state.add_listener(self.store.add)
            self.services["store"] = self.store

            self.layer = build_devices(cfg.devices, self.state, self.clock, db)
            self.services.update(self.layer.services)
            # What each inverter can do (curtailment) is known before control and the uplink
            # are built; one not answering yet joins control when its first poll reads it.
            await self.layer.scan()
            await self._build_stages(stack, db)
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
                    cfg.web.host,
                    cfg.web.port,
                    self.state,
                    self.clock,
                    self.store,
                    cfg.site.name,
                    auth=AuthStore(
                        db,
                        self.clock,
                        session_idle=timedelta(days=cfg.web.session_idle_days),
                        session_max=timedelta(days=cfg.web.session_max_days),
                    ),
                    # Lockouts count wall-clock seconds, also on the HIL rig's fast clock.
                    limiter=LoginLimiter(RealClock()),
                    tls=self._web_tls(),
                )
                self._publish_on_web(self.web)
                if self.config_path is not None:
                    installer.register(
                        self.web,
                        self.config_path,
                        restart=self.request_restart,
                        db=db,
                        clock=self.clock,
                    )
                await self.web.start()
                stack.push_async_callback(self.web.stop)

            log.info(
                "hems started",
                site=cfg.site.id,
                devices=len(self.state.devices),
                stages=sorted(self.services),
                web=f"http://{cfg.web.host}:{self.web.bound_port}/" if self.web else None,
            )
            log_guarantees(self)
            self.notifier.ready()
            self.started.set()
            owner = asyncio.current_task()
            assert owner is not None
            tasks: list[asyncio.Task[None]] = []
            reaper = asyncio.create_task(_reap_stragglers(owner, tasks), name="reaper")
            try:
                async with asyncio.TaskGroup() as tg:
                    for name, service in self.services.items():
                        tasks.append(tg.create_task(self._run_stage(name, service), name=name))
                    if self.control is None:
                        # Without a control loop, liveness of the event loop is the health.
                        tasks.append(tg.create_task(self._watchdog(), name="watchdog"))
                    tg.create_task(self._until_restart(), name="restart")
            except* _Restart:
                log.info("hems restarting to apply its config file")
            finally:
                reaper.cancel()
                self.notifier.stopping()
                log.info("hems stopping", store=asdict(self.store.stats))

    def request_restart(self) -> None:
        """End `run` (cleanly: every stage stops, the store flushes) so the process exits
        and systemd (`Restart=always`) starts it again with the config file as it now is."""
        # Soon, not now: the page that asked still sends its answer first.
        asyncio.get_running_loop().call_soon(self.restart_requested.set)

    async def _until_restart(self) -> None:
        await self.restart_requested.wait()
        raise _Restart

    def _run_stage(self, name: str, service: Service) -> Coroutine[Any, Any, None]:
        """The control loop and the store stop the daemon if they fail (systemd restarts it
        and the watchdog is tied to control's health); every other stage is supervised.
        On a stop every other stage outlives the control loop: its safe-state writes go
        through the device stages' connections."""
        if name == "control":
            return _setting_when_done(service.run(), self._control_stopped)
        if self.control is None:
            self._control_stopped.set()
        if name in _ESSENTIAL:
            return _outliving(service.run(), self._control_stopped)
        health = self.stage_health.setdefault(name, StageHealth())
        return _outliving(supervise(name, service.run, self.clock, health), self._control_stopped)

    # -- the optional stages ------------------------------------------------------------------
    async def _build_stages(self, stack: contextlib.AsyncExitStack, db: Database) -> None:
        cfg = self.cfg
        tz = ZoneInfo(cfg.site.timezone)
        planner_cfg, control_cfg = cfg.planner_config(), cfg.control_config()
        if cfg.ocpp.enabled:
            from hems.devices.ocpp.server import OcppCentralSystem

            self.ocpp = OcppCentralSystem(
                cfg.ocpp_config(), self.state, self.clock, db, listener=self._on_charger_event
            )
            self.services["ocpp"] = self.ocpp

        if cfg.planner.enabled:
            from hems.planning.service import PlannerService

            http = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=5.0),
                transport=httpx.AsyncHTTPTransport(retries=2),
            )
            stack.push_async_callback(http.aclose)
            self.planner = PlannerService(
                planner_cfg,
                cfg.limits,
                self.state,
                db,
                self.clock,
                http,
                site=cfg.site,
                # Plan what the control loop will do: without a loop nothing stops it.
                battery_to_ev=cfg.control.ev_from_battery or not cfg.control.enabled,
            )
            self.services["planner"] = self.planner

        if cfg.control.enabled:
            from hems.control.devices import ControlledDevices
            from hems.control.loop import ControlLoop

            adapters = list(self.layer.devices.values())
            if self.ocpp is not None:
                adapters += list(self.ocpp.chargers.values())
            devices = ControlledDevices.from_adapters(control_cfg, adapters)
            planner = self.planner
            self.control = ControlLoop(
                control_cfg,
                cfg.limits,
                self.state,
                devices,
                self.clock,
                plan_source=(lambda: planner.current_plan) if planner else (lambda: None),
                db=db,
                watchdog=self._control_watchdog(),
            )
            self.services["control"] = self.control
            for adapter in self.layer.devices.values():
                if hasattr(adapter, "on_map_found"):  # a SunSpec unit: curtailable once read
                    adapter.on_map_found(self._on_map_found)
            if self.ocpp is not None:
                ocpp = self.ocpp
                self._charger_join = ChargerJoin(self.control, lambda: ocpp.chargers)

        if self.ocpp is not None:
            self.ev_sessions = EvSessions(
                self.clock,
                tz,
                {e.charger_id: (e.default_departure, e.target_energy_wh) for e in planner_cfg.evs},
                EvSessionTable(db),
                planner=self.planner,
                control=self.control,
                capacity_wh={e.charger_id: e.battery_capacity_wh for e in planner_cfg.evs},
                state=self.state,
                target_soc_pct={e.charger_id: e.target_soc_pct for e in planner_cfg.evs},
            )
            # Before the central system accepts chargers, so a plugged car resumes its session.
            await self.ev_sessions.restore()
            self.services["ev-sessions"] = self.ev_sessions

        if cfg.uplink.enabled:
            from hems.uplink.channel import Uplink

            self.uplink = Uplink(
                cfg.uplink,
                cfg.site.id,
                self.state,
                db,
                self.clock,
                on_event=self._on_event,
                on_envelope=EnvelopeLink(self.planner).on_envelope,
                storage_path=cfg.storage.path,
                capabilities=self._capabilities,
            )
            self.services["uplink"] = self.uplink

        if cfg.flex.enabled:
            from hems.flex.service import FlexService

            link = FlexLink(self.clock, self.planner, self.control, self._live_baseline_w)
            self.flex = FlexService(
                cfg.flex,
                tz,
                db,
                self.clock,
                self._send_up,
                import_limit_w=cfg.limits.import_limit_w,
                export_limit_w=cfg.limits.export_limit_w,
                on_change=link.on_change,
            )
            self.services["flex"] = self.flex

        if self.uplink is not None:
            meter_id = cfg.flex.meter_device_id or next(
                (d for d, r in self.state.devices.items() if r is Role.GRID), None
            )
            if meter_id is not None:
                self.services["uplink-intervals"] = IntervalSender(
                    db, self.clock, meter_id, self.uplink.send
                )

        if cfg.uplink.home_assistant.enabled:
            self.services["home-assistant"] = self._home_assistant()

    def _home_assistant(self) -> Service:
        """Home Assistant on the owner's local broker, with or without an aggregator; with
        `controls`, the owner's controls as HA entities (hems.app.hacommands)."""
        from hems.app.hacommands import HaControls
        from hems.uplink.homeassistant import HomeAssistantDiscovery

        cfg = self.cfg
        surface = None
        if cfg.uplink.home_assistant.controls and self.control is not None:
            surface = HaControls(
                self.clock,
                ZoneInfo(cfg.site.timezone),
                self.control,
                self.ev_sessions,
                self.ocpp.chargers if self.ocpp is not None else (),
                self.flex,
            )
        elif cfg.uplink.home_assistant.controls:
            log.warning("home assistant controls need control.enabled; sensors only")
        return HomeAssistantDiscovery(
            cfg.uplink.home_assistant, cfg.site.id, self.state, self.clock, surface
        )

    def _on_map_found(self, adapter: Any) -> None:
        """A SunSpec unit's models were read after start: one that can be curtailed joins
        control, and the aggregator is told it can now be curtailed."""
        if self.control is not None and self.control.add_device(adapter):
            if self.uplink is not None and getattr(adapter, "curtailable", None) is True:
                self.uplink.capabilities_changed()

    def _on_charger_event(self, event: ChargerEvent) -> None:
        if isinstance(event, ChargerBooted) and not event.pending and self.store is not None:
            self.store.set_role(event.device_id, str(Role.EV))  # one accepted at run time too
        if self._charger_join is not None:
            self._charger_join.on_charger_event(event)
        if self.ev_sessions is not None:
            self.ev_sessions.on_charger_event(event)

    async def _on_event(self, event: Event) -> EventDecision:
        return await answer_event(self.flex, event)

    async def _send_up(self, type_: str, payload: dict[str, Any]) -> int | None:
        if self.uplink is None:
            log.info("no uplink configured; kept locally only", type=type_)
            return None
        return int(await self.uplink.send(type_, payload))

    async def _live_baseline_w(self, instruction: FlexInstruction) -> float:
        """The event's baseline net import [W] for live tracking (NaN: unknown)."""
        if self.flex is None:
            return math.nan
        return await self.flex.live_baseline_w(instruction)

    def _capabilities(self) -> Capabilities:
        from hems.uplink.capabilities import describe_site

        cfg = self.cfg
        control = self.control
        return describe_site(
            self.state.devices,
            cfg.device_ratings(),
            control_enabled=cfg.control.enabled,
            # Under control, or read as curtailable and joining it (`_on_map_found`).
            curtailable=frozenset(
                d
                for d, r in self.state.devices.items()
                if r is Role.PV
                and control is not None
                and (
                    control.controls(d)
                    or getattr(self.layer.devices.get(d), "curtailable", None) is True
                )
            ),
            import_limit_w=cfg.limits.import_limit_w,
            export_limit_w=cfg.limits.export_limit_w,
        )

    def _web_tls(self) -> ssl.SSLContext | None:
        tls = self.cfg.web.tls
        if tls is None:
            return None
        # cryptography's x509 (0.4 MiB) only when the page is served over TLS.
        from hems.web.tls import ensure_self_signed, server_context

        if tls.cert_path is not None and tls.key_path is not None:
            return server_context(tls.cert_path, tls.key_path)
        folder = self.cfg.storage.path.parent
        cert, key = ensure_self_signed(folder, datetime.now(UTC))
        log.info("web page uses a self-signed certificate", cert=str(cert))
        return server_context(cert, key)

    # -- the web page's view of the stages ----------------------------------------------------
    def _publish_on_web(self, web: WebServer) -> None:
        web.set_site_view(self._site_view())
        web.set_config(lambda: self.cfg)  # GET /api/v1/config, secrets masked
        publish_observability(web, self)  # /api/v1/health reasons, /metrics
        web.add_json(
            "stages",
            lambda: {
                "stages": sorted(self.services),
                "failures": {n: h.as_dict() for n, h in self.stage_health.items() if h.failures},
            },
        )
        if self.planner is not None:
            from hems.planning.planio import plan_to_dict

            planner = self.planner
            if self.store is not None:
                money = Money(
                    self.store,
                    planner.tariff,
                    self.state,
                    self.clock,
                    ZoneInfo(self.cfg.site.timezone),
                    self.cfg.planner.tariff.currency,
                )
                web.add_json("money", money.view)
            web.add_json(
                "plan",
                lambda: plan_to_dict(planner.current_plan) if planner.current_plan else None,
            )
        if self.control is not None:
            control = self.control
            web.add_json(
                "control",
                lambda: {
                    "status": control.status(),
                    "flex": control.flex_status(),
                    "interventions": control.recent_interventions()[-20:],
                },
            )
            web.add_action("override", actions.override(control, self.clock))
            web.add_action("battery-mode", actions.battery_mode(control, self.clock))
            web.add_json(
                "batteries",
                lambda: {
                    "modes": control.battery_modes(),
                    "overrides": control.status()["overrides"],
                },
            )
        if self.ocpp is not None:
            ocpp = self.ocpp

            control_ = self.control

            async def chargers() -> dict[str, Any]:
                return {
                    "chargers": {d: c.snapshot() for d, c in ocpp.chargers.items()},
                    "pending": await ocpp.pending(),
                    "sessions": self.ev_sessions.sessions if self.ev_sessions else {},
                    "modes": (
                        {d: control_.ev_mode(d) for d in ocpp.chargers if control_.controls(d)}
                        if control_ is not None
                        else {}
                    ),
                }

            web.add_json("chargers", chargers)
            if self.ev_sessions is not None:
                web.add_action(
                    "ev-session",
                    actions.ev_session(
                        self.ev_sessions,
                        ocpp.chargers,
                        self.clock,
                        ZoneInfo(self.cfg.site.timezone),
                    ),
                )
            web.add_action("accept-charger", actions.accept_charger(ocpp))
            web.add_action("reject-charger", actions.reject_charger(ocpp))
            if self.ev_sessions is not None and self.control is not None:
                web.add_action("ev-mode", actions.ev_mode(self.ev_sessions, ocpp.chargers))
        if self.flex is not None:
            flex, db = self.flex, self.db
            assert db is not None

            async def events() -> list[dict[str, Any]]:
                return [asdict(e) for e in await flex.active_events()]

            web.add_json("events", events)
            web.add_action("flex-opt-out", actions.flex_opt_out(flex))
            from hems.app.flexview import FlexBookView

            planner, uplink = self.planner, self.uplink
            book = FlexBookView(
                db,
                self.flex,
                (lambda: planner.current_plan) if planner is not None else (lambda: None),
                (lambda: list(uplink.rejections)) if uplink is not None else (lambda: []),
            )
            if planner is not None:
                planner.subscribe(book.on_plan)
            web.add_json("flex-events", book.view)
            web.add_json("reports", lambda: recent_reports(db))
        if self.uplink is not None:
            uplink = self.uplink
            web.add_json("keys", lambda: {"gateway_public_key": uplink.public_key})

    def _site_view(self) -> SiteView:
        """What the owner's page shows beyond SiteState: zone, plan, uplink, tariff prices."""
        planner, uplink = self.planner, self.uplink

        def import_prices(start: datetime, n: int) -> list[float | None]:
            assert planner is not None
            return list(planner.tariff.prices(start, n, 30).import_per_kwh)

        return SiteView(
            timezone=ZoneInfo(self.cfg.site.timezone),
            plan=(lambda: planner.current_plan) if planner is not None else None,
            uplink_connected=uplink.connected.is_set if uplink is not None else None,
            import_prices=import_prices if planner is not None else None,
        )

    # -- health ---------------------------------------------------------------------------
    def _control_watchdog(self) -> Callable[[], None]:
        """The control loop calls this only after a healthy cycle; pace it for systemd."""
        interval_s = watchdog_interval_s()
        last = [-math.inf]

        def feed() -> None:
            now = asyncio.get_running_loop().time()
            if interval_s is not None and now - last[0] >= min(interval_s, 5.0):
                last[0] = now
                self.notifier.watchdog()

        return feed

    async def _watchdog(self) -> None:
        # Real seconds: systemd's watchdog counts wall-clock time.
        interval_s = watchdog_interval_s()
        if interval_s is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval_s)


class _Restart(Exception):
    """Raised inside the daemon's TaskGroup to stop every stage for a restart."""


_STOP_GRACE_S = 3.0
_ESSENTIAL = frozenset({"control", "store"})


async def _setting_when_done(work: Coroutine[Any, Any, None], done: asyncio.Event) -> None:
    try:
        await work
    finally:
        done.set()


async def _outliving(work: Coroutine[Any, Any, None], first: asyncio.Event) -> None:
    """Run a stage; cancelled, keep it running until `first` is set (the control loop has
    written its safe states through this stage's connections), at most `_STOP_GRACE_S`."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            waiter = asyncio.ensure_future(first.wait())
            with contextlib.suppress(asyncio.CancelledError):  # cancelled again: stop now
                await asyncio.wait({waiter}, timeout=_STOP_GRACE_S)
            waiter.cancel()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        raise


async def _reap_stragglers(owner: asyncio.Task[Any], tasks: list[asyncio.Task[None]]) -> None:
    """While the daemon stops, cancel again any service that missed its cancellation.

    Python 3.11's `asyncio.wait_for` (used by pymodbus, ocpp, aiomqtt) can swallow a cancel
    that arrives with the answer (see hems.core.tasks); the loops check for that, and this
    makes shutdown finish even where one does not. Systemd would otherwise kill us mid-flush.
    """
    stopping_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(1.0)
        if not owner.cancelling():
            continue
        # Give every service a grace period to finish its own shutdown (the store's last
        # flush) before treating it as one that missed its cancellation.
        stopping_since = stopping_since or loop.time()
        if loop.time() - stopping_since < _STOP_GRACE_S:
            continue
        for task in tasks:
            if not task.done():
                log.warning("service did not stop; cancelling it again", service=task.get_name())
                task.cancel()
