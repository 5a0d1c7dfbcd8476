"""A snapshot placed as `<path>.restore` is swapped in when the store opens, the live file
kept aside with its WAL; a snapshot that fails the check is set aside and the live file kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hems.store.db import Database, sibling, snapshot_problems


async def _store_with(path: Path, value: str) -> None:
    db = await Database.open(path)
    try:
        await db.execute("CREATE TABLE IF NOT EXISTS marker (v TEXT)")
        await db.execute("INSERT INTO marker VALUES (?)", (value,))
    finally:
        await db.close()


async def _markers(path: Path) -> list[str]:
    db = await Database.open(path)
    try:
        return [r[0] for r in await db.fetchall("SELECT v FROM marker ORDER BY rowid")]
    finally:
        await db.close()


def corrupt(path: Path) -> None:
    """A hems database whose pages past the schema are overwritten with junk."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE filler (v TEXT)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 200,) for _ in range(500)])
    conn.commit()
    conn.close()
    with path.open("r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\xa5" * 4096 * 4)


async def test_a_sound_snapshot_replaces_the_live_file_which_is_kept_aside(
    tmp_path: Path,
) -> None:
    live = tmp_path / "hems.db"
    await _store_with(live, "live")
    snapshot = tmp_path / "snapshot.db"
    await _store_with(snapshot, "backed-up")
    snapshot.rename(sibling(live, ".restore"))
    # The live file's last transaction still in its WAL, as after a power cut.
    conn = sqlite3.connect(live)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO marker VALUES ('in the wal')")
    conn.commit()
    main, wal = live.read_bytes(), sibling(live, "-wal").read_bytes()
    assert wal
    conn.close()  # closing checkpoints; put both back as a crash would have left them
    live.write_bytes(main)
    sibling(live, "-wal").write_bytes(wal)

    assert await _markers(live) == ["backed-up"]
    assert not sibling(live, ".restore").exists()
    aside = sibling(live, ".before-restore")
    assert await _markers(aside) == ["live", "in the wal"]


async def test_a_snapshot_that_fails_the_check_is_rejected_and_the_live_file_kept(
    tmp_path: Path,
) -> None:
    live = tmp_path / "hems.db"
    await _store_with(live, "live")
    bad = sibling(live, ".restore")
    corrupt(bad)
    assert snapshot_problems(bad)
    assert await _markers(live) == ["live"]
    assert not bad.exists()
    assert sibling(live, ".restore.rejected").exists()
    assert not sibling(live, ".before-restore").exists()


def test_snapshot_problems_name_what_is_wrong(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert "not a sound SQLite database" in snapshot_problems(junk)[0]
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (v)").connection.close()
    assert snapshot_problems(other) == ["not a hems database (no schema_migrations table)"]
    corrupt(tmp_path / "corrupt.db")
    problem = snapshot_problems(tmp_path / "corrupt.db")[0]
    assert problem.startswith(("integrity_check:", "not a sound SQLite database"))
