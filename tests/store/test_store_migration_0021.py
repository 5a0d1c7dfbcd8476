"""Migration 0021 (the SD-card budget): the control journal loses its two indexes (no hot query
reads them) and keeps its rows; `hems interventions`' query still lists newest first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hems.control.journal import read_interventions
from hems.store.db import connect, migrate, migrations


def test_migration_0021_keeps_the_journal_and_drops_its_indexes(tmp_path: Path) -> None:
    conn = connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, name TEXT, "
                 "applied_at TEXT)")  # fmt: skip
    for number, name, sql in migrations():
        if number < 21:
            conn.executescript(sql)
            conn.execute(
                "INSERT INTO schema_migrations(number, name) VALUES (?, ?)", (number, name)
            )
    rows = [(1_782_000_000_000 + 1000 * i, "fuse" if i % 2 else "export", "", "start",
             f"reason {i}", "{}", "{}") for i in range(40)]  # fmt: skip
    conn.executemany(
        "INSERT INTO control_interventions"
        "(at_ms, rule, device_id, event, reason, before_json, after_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    assert migrate(conn) == [n for n, _, _ in migrations() if n >= 21]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    indexes = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'control_interventions'"
        )
    }
    assert indexes == set()
    stored = conn.execute(
        "SELECT at_ms, rule, device_id, event, reason, before_json, after_json"
        " FROM control_interventions ORDER BY id"
    ).fetchall()
    assert [tuple(r) for r in stored] == rows
    conn.row_factory = sqlite3.Row
    newest = read_interventions(conn, "fuse", 3)
    assert [r[4] for r in newest] == ["reason 39", "reason 37", "reason 35"]
    assert [r[4] for r in read_interventions(conn, None, 2)] == ["reason 39", "reason 38"]
    conn.close()
