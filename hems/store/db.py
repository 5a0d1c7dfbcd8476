"""SQLite access: one connection, one thread, WAL, numbered migrations.

All database work runs on a single dedicated thread so the asyncio loop never blocks on the
SD card and SQLite never sees two writers. Callers use the async methods.

Each commit in WAL mode costs the SD card at least one page per table and index touched (4 KiB
each, plus a frame header) and later the same pages again at the checkpoint. Writes that may
wait go through `defer`/`defer_many`: they are queued and committed with the next write
transaction (the reading store's batch, an outbox append) or, if none comes, a tenth more
than `defer_max_s` after they were queued, counted from the end of the commit running then
(the daemon sets it to the store's batch interval: the batch that starts one interval after
the last one ended takes them, not a commit of their own). A kill -9 loses at most that span
of them; reads through this `Database` see them at once.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import structlog

from hems.errors import StoreError

log = structlog.get_logger(__name__)
T = TypeVar("T")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_MAX_DEFERRED = 20000  # deferred statements queued at most (a failing disk must not grow memory)
# A read replays the queued statements; a longer queue (an outbox drained after an outage:
# an ack delete per row) is committed first, or every read would replay it all again.
_REPLAY_MAX = 64
PAGE_SIZE_B = 1024  # of a new database file (see `connect`)
WAL_CHECKPOINT_B = 4 * 1024 * 1024  # WAL written between automatic checkpoints
# The deferred writes' timer waits this much longer than `defer_max_s`: the store's next batch
# starts one interval after its last commit ended (plus the loop's lag) and takes them along.
_DEFER_SLACK = 1.1


class _DeferredCall:
    """`fn(conn)` run in the next commit; `on_commit(result)` on the loop once committed."""

    __slots__ = ("fn", "on_commit")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], on_commit: Callable[[Any], None] | None
    ) -> None:
        self.fn = fn
        self.on_commit = on_commit


# (sql, rows): one statement run once per row; or a call (`defer_call`)
_Deferred = tuple[str, list[Sequence[Any]]] | _DeferredCall


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every shipped migration, in order. Numbers must be unique."""
    found: dict[int, tuple[str, str]] = {}
    for entry in resources.files("hems.store.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if not m:
            continue
        number = int(m.group(1))
        if number in found:
            raise StoreError(f"migration {number:04d}: defined twice ({entry.name})")
        found[number] = (entry.name, entry.read_text(encoding="utf-8"))
    return [(n, *found[n]) for n in sorted(found)]


def connect(path: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    # A commit writes each page it touches whole, so small pages cut what a small commit
    # costs the SD card (a batch touches ~10 b-tree pages: 10 KiB of WAL instead of 40).
    # Takes effect on a new file only; an existing one keeps its page size (4096).
    conn.execute(f"PRAGMA page_size={PAGE_SIZE_B}")
    conn.execute("PRAGMA journal_mode=WAL")
    # The checkpoint copies each page once however often it was rewritten since the last:
    # about 4 MiB of WAL between checkpoints whatever the page size (SQLite's default is
    # 1000 pages).
    page_b = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_B // page_b}")
    # NORMAL in WAL mode: a power cut may lose the last transaction, never corrupt the file.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply pending migrations, each in its own transaction. Returns the numbers applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL"
        " DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
    )
    done = {row[0] for row in conn.execute("SELECT number FROM schema_migrations")}
    applied: list[int] = []
    for number, name, sql in migrations():
        if number in done:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations(number, name) VALUES (?, ?)", (number, name)
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"migration {name}: {exc}") from exc
        applied.append(number)
    return applied


def _split_sql(sql: str) -> list[str]:
    # executescript would commit implicitly; split on complete statements instead.
    statements: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


def sibling(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended to its name (`hems.db` -> `hems.db.restore`)."""
    return path.with_name(path.name + suffix)


RESTORE_SUFFIX = ".restore"  # a snapshot waiting to replace the database at the next open


def snapshot_problems(path: Path) -> list[str]:
    """Why the SQLite file at `path` cannot stand in for the store (empty when it can):
    `PRAGMA integrity_check` must say ok and the migrations table must be there. The
    installer's restore checks an upload with this, and `apply_pending_restore` again."""
    try:
        conn = sqlite3.connect(str(path))
    except sqlite3.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            return [f"integrity_check: {'; '.join(result[:5])}"]
        tables = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
        ).fetchall()
        if not tables:
            return ["not a hems database (no schema_migrations table)"]
        return []
    except sqlite3.Error as exc:
        return [f"not a sound SQLite database: {exc}"]
    finally:
        conn.close()


def apply_pending_restore(path: Path) -> bool:
    """Swap in `<path>.restore` (placed by the installer's restore) before the store opens.

    A sound snapshot replaces the live file, which is kept as `<path>.before-restore` (with
    its -wal/-shm, so it still opens as it was); a snapshot that fails the check is renamed
    `<path>.restore.rejected` and the live file is kept. Returns whether it was swapped in.
    """
    pending = sibling(path, RESTORE_SUFFIX)
    if not pending.exists():
        return False
    problems = snapshot_problems(pending)
    if problems:
        rejected = sibling(pending, ".rejected")
        os.replace(pending, rejected)
        log.error(
            "store restore rejected; the live database is kept",
            path=str(path), rejected=str(rejected), problems=problems,
        )  # fmt: skip
        return False
    aside = sibling(path, ".before-restore")
    for suffix in ("-wal", "-shm"):
        # A stale log next to an older aside copy would be replayed into the new one.
        sibling(aside, suffix).unlink(missing_ok=True)
        sibling(pending, suffix).unlink(missing_ok=True)
    if path.exists():
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            if sibling(path, suffix).exists():
                os.replace(sibling(path, suffix), sibling(aside, suffix))
    os.replace(pending, path)
    _fsync_dir(path.parent)
    log.warning("store restored from a backup", path=str(path), previous=str(aside))
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Database:
    """The async face of one SQLite file."""

    def __init__(
        self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, path: Path | None = None
    ) -> None:
        self._conn = conn
        self._executor = executor
        self.path = path  # the file (None in memory): the installer's restore places it
        # Real seconds a deferred write waits for a commit to take it along (a tenth more, from
        # the end of the commit running when it was queued; see the module docstring).
        self.defer_max_s = 5.0
        self._deferred: deque[_Deferred] = deque()
        self._deferred_timer: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Future[None] | None = None
        self._committing = 0  # calls running: the timer is armed when they end
        self.deferred_written = 0  # rows committed / dropped (failed or queue full)
        self.deferred_dropped = 0

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        loop = asyncio.get_running_loop()
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                await loop.run_in_executor(executor, apply_pending_restore, Path(path))
            conn = await loop.run_in_executor(executor, connect, path)
            applied = await loop.run_in_executor(executor, migrate, conn)
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"storage.path: cannot open {path}: {exc}") from exc
        if applied:
            log.info("store migrated", path=str(path), applied=applied)
        return cls(conn, executor, None if str(path) == ":memory:" else Path(path))

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        try:
            await self.flush_deferred()
        except (sqlite3.Error, StoreError) as exc:
            log.error("store: deferred writes lost at close", error=str(exc))
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        try:
            self._conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self._conn.close()

    async def backup(self, target: Path) -> None:
        """A consistent copy of the database at `target` (SQLite's online backup API), made
        on the database thread so no write of ours interleaves with it."""

        def run() -> None:
            dst = sqlite3.connect(str(target))
            try:
                self._conn.backup(dst)
            finally:
                dst.close()

        await self.flush_deferred()
        await asyncio.get_running_loop().run_in_executor(self._executor, run)

    # -- deferred writes ------------------------------------------------------------------
    def defer(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue one write statement for the next commit (see the module docstring). It must
        not depend on a result; a statement that fails when committed is logged and dropped."""
        self.defer_many(sql, [params])

    def defer_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        self._queue((sql, rows))

    def defer_call(
        self,
        fn: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
    ) -> None:
        """Queue `fn(conn)` for the next commit, like `defer`; `on_commit(result)` runs on the
        event loop once that commit is done (not if `fn` fails: it is logged and dropped).

        Unlike a deferred statement, reads through this `Database` do not see its writes
        before the commit: what it builds (an outbox row with its seq) must not be used
        before it is durable."""
        self._queue(_DeferredCall(fn, on_commit))

    def _queue(self, item: _Deferred) -> None:
        if len(self._deferred) >= _MAX_DEFERRED:
            self.deferred_dropped += _rows(self._deferred.popleft())
            log.error("store: deferred write queue full, oldest write dropped")
        self._deferred.append(item)
        self._arm_timer()

    def _arm_timer(self) -> None:
        # Not while a commit runs: a write queued during the store's batch waits for the
        # next batch, which comes one interval after this one ends.
        if self._deferred_timer is None and self._deferred and not self._committing:
            loop = asyncio.get_running_loop()
            wait_s = self.defer_max_s * _DEFER_SLACK
            self._deferred_timer = loop.call_later(wait_s, self._deferred_due)

    @property
    def deferred(self) -> int:
        """Statements waiting for a commit."""
        return len(self._deferred)

    def _deferred_due(self) -> None:
        self._deferred_timer = None
        if self._deferred:
            self._flush_task = asyncio.ensure_future(self._flush_deferred_logged())

    async def _flush_deferred_logged(self) -> None:
        try:
            await self.flush_deferred()
        except Exception as exc:  # a timer's task: nobody awaits it
            log.error("store: deferred writes not committed; kept for the next", error=str(exc))

    async def flush_deferred(self) -> None:
        """Commit the queued writes now (a no-op when none are queued)."""
        if self._deferred:
            await self.call(_nothing)

    def _take_deferred(self) -> list[_Deferred]:
        taken = list(self._deferred)
        self._deferred.clear()
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        return taken

    def _give_back(self, taken: list[_Deferred]) -> None:
        # The commit failed: the writes go back in front, in order, within the bound.
        self._deferred.extendleft(reversed(taken))
        while len(self._deferred) > _MAX_DEFERRED:
            self.deferred_dropped += _rows(self._deferred.popleft())
        self._arm_timer()

    def _apply(
        self, taken: list[_Deferred], replay: bool = False
    ) -> list[tuple[Callable[[Any], None], Any]]:
        """Run deferred statements in the open transaction, each in its own savepoint so a
        failing one goes alone. `replay`: for a read that is rolled back afterwards (deferred
        calls are left out). Returns the (on_commit, result) pairs to run after the commit."""
        done: list[tuple[Callable[[Any], None], Any]] = []
        for item in taken:
            if isinstance(item, _DeferredCall) and replay:
                continue
            self._conn.execute("SAVEPOINT deferred")
            try:
                if isinstance(item, _DeferredCall):
                    result = item.fn(self._conn)
                    if item.on_commit is not None:
                        done.append((item.on_commit, result))
                else:
                    self._conn.executemany(item[0], item[1])
            except Exception as exc:  # a bad call must not block the commit it rides on
                self._conn.execute("ROLLBACK TO deferred")
                if not replay:
                    self.deferred_dropped += _rows(item)
                    what = item[0][:80] if isinstance(item, tuple) else _name(item.fn)
                    log.error("store: deferred write failed, dropped", sql=what, error=str(exc))
            else:
                if not replay:
                    self.deferred_written += _rows(item)
            self._conn.execute("RELEASE deferred")
        return done

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` inside one transaction on the database thread."""

        # Queued writes go first, in this transaction: their commit costs nothing more.
        taken = self._take_deferred()
        loop = asyncio.get_running_loop()

        def run() -> T:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    done = self._apply(taken)
                    result = fn(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                # Decided here, not by the awaiting task: a cancelled caller does not
                # stop this thread, so only a rollback gives the queued writes back.
                if taken:
                    loop.call_soon_threadsafe(self._give_back, taken)
                raise
            for on_commit, value in done:
                loop.call_soon_threadsafe(on_commit, value)
            return result

        self._committing += 1
        try:
            return await loop.run_in_executor(self._executor, run)
        finally:
            self._committing -= 1
            self._arm_timer()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run the read-only `fn(conn)` on the database thread, seeing the queued writes
        like `fetchall` (replayed, then rolled back) without committing them: a read made
        right after a deferred write must not turn it into a commit of its own."""
        if len(self._deferred) > _REPLAY_MAX:
            await self.flush_deferred()
        pending = list(self._deferred)

        def run() -> T:
            if not pending:
                return fn(self._conn)
            self._conn.execute("BEGIN")
            try:
                self._apply(pending, replay=True)
                return fn(self._conn)
            finally:
                self._conn.execute("ROLLBACK")

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        return await self.call(lambda c: c.execute(sql, params).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        rows = list(rows)
        return await self.call(lambda c: c.executemany(sql, rows).rowcount)

    async def fetchall(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[sqlite3.Row]:
        # Queued writes are seen: applied in a transaction that is rolled back (in WAL mode
        # nothing reaches the disk before a commit).
        return await self.read(lambda c: c.execute(sql, params).fetchall())

    async def fetchone(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


def _nothing(_: sqlite3.Connection) -> None:
    return None


def _rows(item: _Deferred) -> int:
    return 1 if isinstance(item, _DeferredCall) else len(item[1])


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", fn))
