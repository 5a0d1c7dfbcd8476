"""Restoring a backup from the installer's page: upload, check, review, confirm, restart.

    GET  /installer/restore  the upload form (multipart, `csrf` its first field)
    POST /installer/restore  multipart: the zip is streamed to disk under a cap (413 past
                             it) and checked: only the config file and `hems.db`, no paths,
                             the config passes check-config as on the config page, the
                             snapshot passes `integrity_check` and has `schema_migrations`.
                             Any problem: 422 listing each, nothing changed. Otherwise the
                             config diff and the snapshot's size and newest reading, with a
                             confirm button. Urlencoded with `confirm=1`: write the config
                             (atomically, `.bak` kept), place the snapshot as
                             `<storage.path>.restore` and restart the daemon; the store swaps
                             it in when it opens (hems.store.db.apply_pending_restore).

The upload is staged next to the database (same file system, so placing it is a rename, and
not in a RAM-backed /tmp); one restore is pending at a time, named by a random token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import BodyPartReader, MultipartReader, web

from hems.config import ConfigErrors
from hems.configedit import apply_edits, text_digest, unified_diff, write_atomic
from hems.store.db import RESTORE_SUFFIX, Database, sibling, snapshot_problems
from hems.web.api import Audit
from hems.web.render import render
from hems.web.server import multipart_of, session_of

log = structlog.get_logger(__name__)

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
_MAX_CONFIG_BYTES = 1024 * 1024
_MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024 * 1024  # unpacked; a zip bomb stops here
_SNAPSHOT_NAME = "hems.db"
_CHUNK_BYTES = 256 * 1024


class Refused(Exception):
    """The upload is not a restorable backup; `problems` says why (HTTP `status`)."""

    def __init__(self, problems: list[str], status: int = 422) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.status = status


@dataclass(frozen=True, slots=True)
class _Pending:
    token: str
    config_text: str
    snapshot: Path


class RestorePages:
    """The two routes; `db.path` says where the database lives (and where to stage)."""

    def __init__(
        self,
        config_path: Path,
        restart: Callable[[], None],
        db: Database | None,
        max_upload_bytes: int,
        audit: Audit,
    ) -> None:
        self._audit = audit
        self._path = config_path
        self._restart = restart
        self._db_path = db.path if db is not None else None
        self._max_upload_bytes = max_upload_bytes
        self._pending: _Pending | None = None

    async def page(self, request: web.Request) -> web.Response:
        return self._form(request, [])

    async def post(self, request: web.Request) -> web.Response:
        if self._db_path is None:
            return self._form(request, ["restore: this daemon has no database file"], 409)
        if request.content_type == "multipart/form-data":
            return await self._upload(request, self._db_path)
        return await self._confirm(request, self._db_path)

    async def _upload(self, request: web.Request, db_path: Path) -> web.Response:
        staged_zip = sibling(db_path, ".restore.upload")
        try:
            await self._receive(request, staged_zip)
            text = self._path.read_text(encoding="utf-8")
            snapshot = sibling(db_path, ".restore.pending")
            config_text, summary = await asyncio.to_thread(
                _unpack, staged_zip, self._path.name, snapshot
            )
        except Refused as exc:
            return self._form(request, exc.problems, exc.status)
        except OSError as exc:
            return self._form(request, [f"restore: cannot stage the upload: {exc}"], 500)
        finally:
            staged_zip.unlink(missing_ok=True)
        self._pending = _Pending(secrets.token_urlsafe(16), config_text, snapshot)
        return _html(
            render(
                "installer_restore.html",
                title="Review the restore",
                csrf=_csrf(request),
                step="review",
                path=str(self._path),
                db_path=str(db_path),
                diff=unified_diff(text, config_text, self._path.name),
                summary=summary,
                token=self._pending.token,
                base=text_digest(text),
            )
        )

    async def _receive(self, request: web.Request, target: Path) -> None:
        """The `backup` part of the form streamed to `target`, at most the cap."""
        cap = self._max_upload_bytes
        if request.content_length is not None and request.content_length > cap:
            raise Refused([f"backup: larger than {cap} bytes"], 413)
        reader = multipart_of(request)
        if reader is None:  # an API token's request: the guard read nothing
            reader = await request.multipart()
        try:
            found = await self._copy_parts(reader, target, cap)
        except (ValueError, KeyError, AssertionError) as exc:  # aiohttp on a malformed body
            raise Refused([f"backup: not a well-formed form upload ({exc})"]) from None
        if not found:
            raise Refused(["backup: no file was sent"])

    @staticmethod
    async def _copy_parts(reader: MultipartReader, target: Path, cap: int) -> bool:
        found, total = False, 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise Refused(["backup: a nested multipart is not a backup"])
            keep = part.name == "backup" and not found  # other parts are read and dropped
            with target.open("wb") if keep else contextlib.nullcontext() as out:
                while chunk := await part.read_chunk(_CHUNK_BYTES):
                    total += len(chunk)
                    if total > cap:
                        raise Refused([f"backup: larger than {cap} bytes"], 413)
                    if out is not None:
                        await asyncio.to_thread(out.write, chunk)
            found = found or keep
        return found

    async def _confirm(self, request: web.Request, db_path: Path) -> web.Response:
        posted = {k: str(v) for k, v in (await request.post()).items()}
        pending = self._pending
        if pending is None or not secrets.compare_digest(posted.get("token", ""), pending.token):
            problems = ["restore: nothing to confirm; upload the backup again"]
            return self._form(request, problems, 409)
        text = self._path.read_text(encoding="utf-8")
        if posted.get("base") != text_digest(text):
            return self._form(
                request, ["restore: the config file changed since the review; upload again"], 409
            )
        target = sibling(db_path, RESTORE_SUFFIX)
        try:
            same = text == pending.config_text
            backup = None if same else write_atomic(self._path, pending.config_text)
            os.replace(pending.snapshot, target)
        except OSError as exc:
            return self._form(request, [f"restore: cannot write: {exc.strerror or exc}"], 500)
        self._pending = None
        log.warning(
            "backup restored from the installer page; restarting",
            config=str(self._path), snapshot=str(target),
        )  # fmt: skip
        what = "database snapshot staged" + ("" if same else " and config file changed")
        await self._audit(request, f"backup restored from the page: {what}")
        self._restart()
        return _html(
            render(
                "installer_restore.html",
                title="Restored; hems restarts",
                csrf="",
                step="done",
                path=str(self._path),
                db_path=str(db_path),
                backup=str(backup) if backup else "",
            )
        )

    def _form(self, request: web.Request, problems: list[str], status: int = 200) -> web.Response:
        return _html(
            render(
                "installer_restore.html",
                title="Installer: restore a backup",
                csrf=_csrf(request),
                step="form",
                problems=problems,
                path=str(self._path),
            ),
            status,
        )


@dataclass(frozen=True, slots=True)
class SnapshotSummary:
    size_bytes: int
    newest_reading: str  # ISO time of the newest raw reading, "" when there is none


def member_problems(names: list[str], config_name: str) -> list[str]:
    """Why a zip's member names are not a hems backup: exactly the config file (by its
    name) and `hems.db`, plain file names only (no folder, no `..`)."""
    problems: list[str] = []
    expected = {config_name, _SNAPSHOT_NAME}
    for name in names:
        if "/" in name or "\\" in name or name in ("", ".", "..") or ":" in name:
            problems.append(f"{name}: a path, not a file name; refused")
        elif names.count(name) > 1:
            problems.append(f"{name}: more than once in the zip")
        elif name not in expected:
            problems.append(f"{name}: not part of a backup (expected {config_name}, hems.db)")
    problems += [f"{n}: missing from the zip" for n in sorted(expected) if n not in names]
    return list(dict.fromkeys(problems))


def _unpack(archive: Path, config_name: str, snapshot: Path) -> tuple[str, SnapshotSummary]:
    """The backup's config text (checked) and its snapshot unpacked to `snapshot` (checked)."""
    try:
        z = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise Refused(["backup: not a zip file"]) from None
    with z:
        infos = z.infolist()
        problems = member_problems([i.filename for i in infos], config_name)
        problems += [f"{i.filename}: encrypted" for i in infos if i.flag_bits & 0x1]
        if problems:
            raise Refused(problems)
        config_text = _read_config(z, config_name)
        _extract(z, _SNAPSHOT_NAME, snapshot)
    try:
        bad = snapshot_problems(snapshot)
        if bad:
            raise Refused([f"hems.db: {p}" for p in bad])
        return config_text, SnapshotSummary(snapshot.stat().st_size, _newest_reading(snapshot))
    except BaseException:
        snapshot.unlink(missing_ok=True)
        raise


def _read_config(z: zipfile.ZipFile, name: str) -> str:
    with z.open(name) as f:
        raw = f.read(_MAX_CONFIG_BYTES + 1)
    if len(raw) > _MAX_CONFIG_BYTES:
        raise Refused([f"{name}: larger than {_MAX_CONFIG_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused([f"{name}: not UTF-8 text"]) from None
    try:  # the config page's check: the same validate as `hems check-config`
        checked = apply_edits(text, {}, source=name)
    except ConfigErrors as exc:
        raise Refused([f"{name}: {p}" for p in exc.problems]) from None
    if not checked.ok:
        raise Refused([f"{name}: {p}" for p in checked.problems])
    return text


def _extract(z: zipfile.ZipFile, name: str, target: Path) -> None:
    """Copy a member out counting bytes ourselves (the zip's stated size may lie)."""
    total = 0
    try:
        with z.open(name) as src, target.open("wb") as dst:
            while chunk := src.read(_CHUNK_BYTES):
                total += len(chunk)
                if total > _MAX_SNAPSHOT_BYTES:
                    raise Refused([f"{name}: larger than {_MAX_SNAPSHOT_BYTES} bytes unpacked"])
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        target.unlink(missing_ok=True)
        raise Refused([f"{name}: the zip is damaged ({exc})"]) from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _newest_reading(path: Path) -> str:
    conn = sqlite3.connect(str(path))
    try:
        row = conn.execute("SELECT max(at_ms) FROM readings").fetchone()
    except sqlite3.Error:  # an old or partial schema: the summary just leaves it out
        return ""
    finally:
        conn.close()
    if row is None or row[0] is None:
        return ""
    return datetime.fromtimestamp(row[0] / 1000, UTC).isoformat(timespec="seconds")


def _csrf(request: web.Request) -> str:
    session = session_of(request)
    return session.csrf if session is not None else ""


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, content_type="text/html", status=status)
