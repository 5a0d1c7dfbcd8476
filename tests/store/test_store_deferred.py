"""Deferred writes (`Database.defer`): seen by reads at once, committed with the next write
transaction or after `defer_max_s`, a failing one dropped alone, given back when the commit
they rode on is rolled back."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from hems.store.db import Database, connect

INSERT = "INSERT INTO app_state(key, value) VALUES (?, ?)"


def committed(path: Path) -> dict[str, str]:
    """What another connection (another process: `hems interventions`, a backup) sees."""
    conn = sqlite3.connect(str(path))
    try:
        return dict(conn.execute("SELECT key, value FROM app_state").fetchall())
    finally:
        conn.close()


async def test_deferred_writes_are_read_at_once_and_ride_on_the_next_commit(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "d.db")
    db.defer_max_s = 3600.0  # no timer: only the next write commits them
    try:
        db.defer(INSERT, ("a", "1"))
        db.defer_many(INSERT, [("b", "2"), ("c", "3")])
        assert db.deferred == 2
        rows = await db.fetchall("SELECT key FROM app_state ORDER BY key")
        assert [r[0] for r in rows] == ["a", "b", "c"]
        assert committed(db.path) == {}  # type: ignore[arg-type]
        assert db.deferred == 2  # a read commits nothing
        await db.execute(INSERT, ("d", "4"))
        assert committed(db.path) == {"a": "1", "b": "2", "c": "3", "d": "4"}  # type: ignore[arg-type]
        assert db.deferred == 0 and db.deferred_written == 3
    finally:
        await db.close()


async def test_deferred_writes_are_committed_after_defer_max_s_and_on_close(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "d.db")
    db.defer_max_s = 30.0
    loop = asyncio.get_running_loop()
    db.defer(INSERT, ("a", "1"))
    timer = db._deferred_timer
    # defer_max_s and a tenth: the store's batch, due after defer_max_s, goes first.
    assert timer is not None and 32.0 < timer.when() - loop.time() <= 33.0
    timer.cancel()
    db._deferred_due()  # what the timer does when it fires, without waiting 30 s
    assert db._flush_task is not None
    await db._flush_task
    assert committed(db.path) == {"a": "1"}  # type: ignore[arg-type]
    db.defer_max_s = 3600.0
    db.defer(INSERT, ("b", "2"))
    await db.close()
    assert committed(tmp_path / "d.db") == {"a": "1", "b": "2"}


async def test_a_write_deferred_while_a_commit_runs_waits_for_the_next_batch(
    tmp_path: Path,
) -> None:
    """Issue 16: a write queued while the store's batch is being committed must not get a
    commit of its own just before the next batch (its timer counted from its queueing ran
    out first: ~100 extra commits a day). The timer starts when the running commit ends."""
    db = await Database.open(tmp_path / "d.db")
    db.defer_max_s = 60.0
    loop = asyncio.get_running_loop()
    inside, release = asyncio.Event(), threading.Event()

    def batch(conn: sqlite3.Connection) -> None:
        conn.execute(INSERT, ("batch", "1"))
        loop.call_soon_threadsafe(inside.set)
        release.wait(10)

    try:
        running = asyncio.ensure_future(db.call(batch))
        await inside.wait()
        db.defer(INSERT, ("late", "1"))  # queued during the batch's commit
        assert db._deferred_timer is None
        release.set()
        await running
        timer = db._deferred_timer
        assert timer is not None and 65.0 < timer.when() - loop.time() <= 66.0
        assert committed(db.path) == {"batch": "1"}  # type: ignore[arg-type]
        await db.execute(INSERT, ("next", "1"))  # the next batch takes it along
        assert db._deferred_timer is None
        assert committed(db.path) == {"batch": "1", "late": "1", "next": "1"}  # type: ignore[arg-type]
    finally:
        release.set()
        await db.close()


async def test_a_read_call_sees_deferred_writes_without_committing_them(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "d.db")
    db.defer_max_s = 3600.0
    try:
        db.defer(INSERT, ("a", "1"))
        rows = await db.read(lambda c: c.execute("SELECT key FROM app_state").fetchall())
        assert [r[0] for r in rows] == ["a"]
        assert committed(db.path) == {} and db.deferred == 1  # type: ignore[arg-type]
    finally:
        await db.close()


async def test_a_failing_deferred_write_is_dropped_alone(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "d.db")
    db.defer_max_s = 3600.0
    try:
        db.defer(INSERT, ("a", "1"))
        db.defer(INSERT, ("a", "again"))  # primary key taken: fails
        db.defer("INSERT INTO no_such_table VALUES (?)", (1,))
        db.defer(INSERT, ("b", "2"))
        await db.execute(INSERT, ("c", "3"))
        assert committed(db.path) == {"a": "1", "b": "2", "c": "3"}  # type: ignore[arg-type]
        assert db.deferred_dropped == 2 and db.deferred_written == 2
    finally:
        await db.close()


async def test_deferred_writes_survive_a_rolled_back_transaction(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "d.db")
    db.defer_max_s = 3600.0
    try:
        db.defer(INSERT, ("a", "1"))

        def boom(conn: sqlite3.Connection) -> None:
            conn.execute(INSERT, ("x", "never"))
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await db.call(boom)
        assert committed(db.path) == {}  # type: ignore[arg-type]
        assert db.deferred == 1  # given back, in front
        db.defer(INSERT, ("b", "2"))
        await db.flush_deferred()
        assert committed(db.path) == {"a": "1", "b": "2"}  # type: ignore[arg-type]
    finally:
        await db.close()


async def test_a_long_deferred_queue_is_committed_before_a_read_not_replayed(
    tmp_path: Path,
) -> None:
    # An outbox drained after an outage queues an ack delete per row; replaying all of them
    # on every read made the drain slow down as the queue grew.
    db = await Database.open(tmp_path / "d.db")
    db.defer_max_s = 3600.0
    try:
        for i in range(10):
            db.defer(INSERT, (f"k{i}", "v"))
        await db.fetchall("SELECT 1")
        assert db.deferred == 10 and committed(db.path) == {}  # type: ignore[arg-type]
        for i in range(10, 100):
            db.defer(INSERT, (f"k{i}", "v"))
        rows = await db.fetchall("SELECT count(*) FROM app_state")
        assert rows[0][0] == 100
        assert db.deferred == 0 and len(committed(db.path)) == 100  # type: ignore[arg-type]
    finally:
        await db.close()


def test_a_new_file_has_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    conn = connect(tmp_path / "new.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 1024
    # About 4 MiB of WAL between automatic checkpoints, whatever the page size.
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 4096
    conn.close()
    old = sqlite3.connect(str(tmp_path / "old.db"))
    old.execute("PRAGMA page_size=4096")
    old.execute("CREATE TABLE t(x)")
    old.close()
    conn = connect(tmp_path / "old.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1024
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
