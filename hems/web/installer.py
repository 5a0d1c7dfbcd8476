"""The installer's pages: edit the config file, apply it, download a backup.

    GET  /installer/config   the form over the config file's installer settings
    POST /installer/config   check the submitted values: 422 with each check-config message
                             next to its field, else the diff and a confirm button; with
                             `confirm=1` write the file (atomically, previous kept as
                             `<file>.bak`) and restart the daemon so it runs the new file
    GET  /installer/backup   a zip of the config file and a consistent SQLite snapshot
    GET/POST /installer/restore  upload such a zip, review, confirm (hems.web.restore)
    GET  /installer/devices  scan an address for a device to add
    POST /installer/scan     start a scan (one at a time) and go to its page
    GET  /installer/scan/ID  the scan's progress (reloads itself while it runs), then the
                             entries found, each with an "add" that shows the diff first
    POST /installer/devices/add  add a scanned entry to devices[] (diff, then confirm)

PATCH /api/v1/config (hems.web.api) takes the same form values as JSON, through the same
check (`check_form`), write and restart, without the review step.

All routes sit behind the web server's guard (session or token; CSRF and same origin for the
POST). Applying restarts the whole daemon: under systemd (`Restart=always`) it comes back
with the new file; no stage is reloaded in place.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog
from aiohttp import web

from hems.config import ConfigErrors
from hems.configedit import append_entry, load_document, text_digest, unified_diff, write_atomic
from hems.core.clock import Clock
from hems.devices.modbus.scan import format_text, parse_target, suggested_entries
from hems.errors import ConfigError
from hems.store.db import Database
from hems.web.api import Audit
from hems.web.configform import FormSection, check_form, sections
from hems.web.render import render
from hems.web.restore import MAX_UPLOAD_BYTES, RestorePages
from hems.web.scanjobs import ScanBusy, ScanJobs
from hems.web.server import WebServer, session_of

log = structlog.get_logger(__name__)


def register(
    web_server: WebServer,
    config_path: Path,
    *,
    restart: Callable[[], None],
    db: Database | None,
    clock: Clock,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    scan_timeout_s: float = 2.0,
) -> None:
    """Add the installer's routes to the web server (`max_upload_bytes`: the restore's
    upload cap; `scan_timeout_s`: per Modbus request of a scan)."""
    scans = ScanJobs(clock, timeout_s=scan_timeout_s)
    web_server.add_cleanup(scans.close)
    pages = _Installer(config_path, restart, db, clock, scans, web_server.audit_config)
    web_server.set_config_file(config_path, restart)  # PATCH /api/v1/config, same restart
    restore = RestorePages(config_path, restart, db, max_upload_bytes, web_server.audit_config)
    web_server.add_route("GET", "/installer/config", pages.config_page)
    web_server.add_route("POST", "/installer/config", pages.config_post)
    web_server.add_route("GET", "/installer/backup", pages.backup)
    web_server.add_route("GET", "/installer/restore", restore.page)
    web_server.add_route("POST", "/installer/restore", restore.post)
    web_server.add_route("GET", "/installer/devices", pages.devices_page)
    web_server.add_route("POST", "/installer/scan", pages.scan)
    web_server.add_route("GET", "/installer/scan/{job}", pages.scan_page)
    web_server.add_route("POST", "/installer/devices/add", pages.add_device)


class _Installer:
    def __init__(
        self,
        path: Path,
        restart: Callable[[], None],
        db: Database | None,
        clock: Clock,
        scans: ScanJobs,
        audit: Audit,
    ) -> None:
        self._audit = audit
        self._scans = scans
        self._path = path
        self._restart = restart
        self._db = db
        self._clock = clock

    async def config_page(self, request: web.Request) -> web.Response:
        text = self._path.read_text(encoding="utf-8")
        try:
            form = sections(load_document(text))
        except ConfigErrors as exc:
            return self._form(request, [], {"": exc.problems}, text, status=500)
        return self._form(request, form, {}, text)

    async def config_post(self, request: web.Request) -> web.Response:
        posted = {k: str(v) for k, v in (await request.post()).items()}
        text = self._path.read_text(encoding="utf-8")
        result = check_form(text, posted, source=str(self._path))
        fields = result.fields
        shown = _with_values(result.form, posted)
        if not result.ok or result.checked is None:
            return self._form(request, shown, result.problems, text, 422)
        checked = result.checked
        if posted.get("confirm") != "1":
            return _html(
                render(
                    "installer_diff.html",
                    title="Review the change",
                    csrf=_csrf(request),
                    path=str(self._path),
                    diff=unified_diff(text, checked.new_text, self._path.name),
                    values={f.name: posted[f.name] for f in fields if f.name in posted},
                    base=text_digest(text),
                )
            )
        if posted.get("base") != text_digest(text):
            problems = {"": ["the file changed since you reviewed it; review the change again"]}
            return self._form(request, shown, problems, text, 409)
        if not checked.changed:
            return _html(render("installer_done.html", title="Nothing to change", restarted=False))
        try:
            backup = write_atomic(self._path, checked.new_text)
        except OSError as exc:
            problems = {"": [f"{self._path}: cannot write: {exc.strerror or exc}"]}
            return self._form(request, shown, problems, text, 500)
        log.warning("config changed from the installer page; restarting", path=str(self._path))
        changed = ", ".join(result.changed)
        await self._audit(request, f"config file changed from the page: {changed}")
        self._restart()
        return _html(
            render(
                "installer_done.html",
                title="Saved; hems restarts",
                restarted=True,
                path=str(self._path),
                backup=str(backup) if backup else "",
            )
        )

    async def backup(self, request: web.Request) -> web.StreamResponse:
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%SZ")
        with tempfile.TemporaryDirectory(prefix="hems-backup-") as tmp:
            archive = Path(tmp) / "backup.zip"
            snapshot = Path(tmp) / "hems.db"
            if self._db is not None:
                await self._db.backup(snapshot)
            await asyncio.to_thread(_zip, archive, self._path, snapshot)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/zip",
                    "Content-Disposition": f'attachment; filename="hems-backup-{stamp}.zip"',
                }
            )
            response.content_length = archive.stat().st_size
            await response.prepare(request)
            with archive.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, 256 * 1024):
                    await response.write(chunk)
            await response.write_eof()
            return response

    # -- adding a device from a scan -----------------------------------------------------
    async def devices_page(self, request: web.Request) -> web.Response:
        return _html(render("installer_devices.html", title="Installer: add a device",
                            csrf=_csrf(request), target="", units="1", job=None,
                            running_id="", report=None, entries=[], error=""))  # fmt: skip

    async def scan(self, request: web.Request) -> web.Response:
        """Start a scan of an address (the `hems scan` logic) and send the browser to its
        progress page."""
        posted = {k: str(v) for k, v in (await request.post()).items()}
        target, units_text = posted.get("target", "").strip(), posted.get("units", "1")

        def again(error: str, status: int, job_id: str = "") -> web.Response:
            return _html(render("installer_devices.html", title="Installer: add a device",
                                csrf=_csrf(request), target=target, units=units_text,
                                job=None, running_id=job_id, report=None, entries=[],
                                error=error), status)  # fmt: skip

        try:
            host, port = parse_target(target)
            units = [int(u) for u in units_text.replace(",", " ").split()]
        except (ConfigError, ValueError) as exc:
            return again(str(exc) if isinstance(exc, ConfigError) else "units: numbers", 422)
        if not units or len(units) > 8 or any(not 0 <= u <= 247 for u in units):
            return again("units: 1..8 unit ids, each 0..247", 422)
        try:
            job = self._scans.start(host, port, units)
        except ScanBusy as exc:
            return again("another scan is still running; wait for it to finish", 409, exc.job_id)
        log.info("installer scan started", target=f"{host}:{port}", units=units)
        raise web.HTTPSeeOther(f"/installer/scan/{job.job_id}")

    async def scan_page(self, request: web.Request) -> web.Response:
        """A scan's progress while it runs (the page reloads itself), then what it found."""
        job = self._scans.get(request.match_info["job"])
        if job is None:
            return _html(render("installer_devices.html", title="Installer: add a device",
                                csrf=_csrf(request), target="", units="1", job=None,
                                running_id="", report=None, entries=[],
                                error="that scan is over or unknown; scan again"), 404)  # fmt: skip
        # Entries are offered once the scan is over, not while units are still being asked.
        entries = (
            []
            if job.running
            else [
                json.dumps(e, separators=(",", ":"))
                for r in job.reports
                if r.kind != "none"
                for e in suggested_entries(r, job.host, job.port)
            ]
        )
        if job.running:
            error = ""
        elif job.error:
            error = f"the scan stopped: {job.error}"
        else:
            error = "" if entries else "nothing found at that address"
        return _html(render("installer_devices.html", title="Installer: add a device",
                            csrf=_csrf(request), target=f"{job.host}:{job.port}",
                            units=" ".join(str(u) for u in job.units), job=job, running_id="",
                            elapsed_s=int((self._clock.now() - job.started_at).total_seconds()),
                            report=format_text(job.reports, job.host, job.port)
                            if job.reports else None,
                            entries=entries,
                            error=error))  # fmt: skip

    async def add_device(self, request: web.Request) -> web.Response:
        """A scanned entry added to devices[]: checked, shown as a diff, then written."""
        posted = {k: str(v) for k, v in (await request.post()).items()}
        try:
            entry = json.loads(posted.get("entry", ""))
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise ValueError
        except ValueError:
            return _html(render("installer_done.html", title="Not a device entry",
                                restarted=False), 422)  # fmt: skip
        if posted.get("id"):
            entry["id"] = posted["id"].strip()
        text = self._path.read_text(encoding="utf-8")
        checked = append_entry(text, "devices", entry, source=str(self._path))
        if not checked.ok:
            return _html(render("installer_devices.html", title="Installer: add a device",
                                csrf=_csrf(request), target="", units="1", job=None,
                                running_id="", report=None, entries=[json.dumps(entry)],
                                error="; ".join(checked.problems)), 422)  # fmt: skip
        if posted.get("confirm") != "1":
            return _html(render("installer_diff.html", title="Review the new device",
                                csrf=_csrf(request), path=str(self._path),
                                diff=unified_diff(text, checked.new_text, self._path.name),
                                values={"entry": json.dumps(entry)}, base=text_digest(text),
                                action="/installer/devices/add"))  # fmt: skip
        if posted.get("base") != text_digest(text):
            return _html(render("installer_done.html", title="The file changed; scan again",
                                restarted=False), 409)  # fmt: skip
        try:
            backup = write_atomic(self._path, checked.new_text)
        except OSError as exc:
            return _html(render("installer_done.html",
                                title=f"Cannot write {self._path}: {exc.strerror or exc}",
                                restarted=False), 500)  # fmt: skip
        log.warning("device added from the installer page; restarting", device=entry["id"])
        await self._audit(request, f"device added from the page: {entry['id']}")
        self._restart()
        return _html(render("installer_done.html", title="Device added; hems restarts",
                            restarted=True, path=str(self._path),
                            backup=str(backup) if backup else ""))  # fmt: skip

    def _form(
        self,
        request: web.Request,
        form: list[FormSection],
        problems: dict[str, list[str]] | dict[str, tuple[str, ...]],
        text: str,
        status: int = 200,
    ) -> web.Response:
        names = {f.name for s in form for f in s.fields}
        other = [
            f"{where}: {m}" if where else m
            for where, messages in problems.items()
            if where not in names
            for m in messages
        ]
        return _html(
            render(
                "installer_config.html",
                title="Installer: configuration",
                csrf=_csrf(request),
                path=str(self._path),
                sections=form,
                problems=problems,
                other=other,
            ),
            status,
        )


def _with_values(form: list[FormSection], posted: dict[str, str]) -> list[FormSection]:
    """The form showing what was submitted, so a rejected value stays in view."""
    return [
        FormSection(
            s.title,
            tuple(replace(f, value=posted.get(f.name, f.value)) for f in s.fields),
        )
        for s in form
    ]


def _zip(archive: Path, config: Path, snapshot: Path) -> None:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(config, config.name)
        if snapshot.exists():
            z.write(snapshot, "hems.db")


def _csrf(request: web.Request) -> str:
    session = session_of(request)
    return session.csrf if session is not None else ""


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, content_type="text/html", status=status)
