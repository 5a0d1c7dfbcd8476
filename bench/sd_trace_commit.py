"""Issue 16: what one small WAL commit costs in `write_bytes`, by how far apart commits are.

The kernel counts a 4 KiB page-cache page each time it goes from clean to dirty, and writes a
dirty page back after `vm.dirty_expire_centisecs` (30 s by default). A commit of ~12 1-KiB
frames spans 4 or 5 pages of the -wal and dirties several of the mmap'd -shm (the wal-index
header, the frames' page numbers, hash slots): commits a few seconds apart (the soak at 10x)
share those pages, commits a minute apart (a real day's store batches) each pay for all of
them. Also with `locking_mode=EXCLUSIVE` (the wal-index in memory, no -shm).

Run (about 8 minutes, mostly sleeping): .venv/bin/python bench/sd_trace_commit.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hems.store.db import connect

TABLES = 12  # one row updated in each: a commit of ~12 frames, like a store batch
COMMITS = 5


def thread_write_bytes() -> int:
    with open("/proc/thread-self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def run(locking: str, apart_s: float) -> tuple[list[int], list[int]]:
    folder = Path(tempfile.mkdtemp(prefix="hems-commit-", dir=Path.home()))
    conn = connect(folder / "x.db")
    conn.execute(f"PRAGMA locking_mode={locking}")
    for i in range(TABLES):
        conn.execute(f"CREATE TABLE t{i}(k INTEGER PRIMARY KEY, v BLOB)")
        conn.executemany(f"INSERT INTO t{i} VALUES (?, randomblob(200))", [(k,) for k in range(40)])
    conn.execute("BEGIN IMMEDIATE")  # a first commit, not counted: the -shm being set up
    conn.execute("UPDATE t0 SET v = randomblob(200) WHERE k = 0")
    conn.execute("COMMIT")
    time.sleep(40)  # everything written back
    counted, wal = [], []
    for n in range(COMMITS):
        wb0, size0 = thread_write_bytes(), os.path.getsize(folder / "x.db-wal")
        conn.execute("BEGIN IMMEDIATE")
        for i in range(TABLES):
            conn.execute(f"UPDATE t{i} SET v = randomblob(200) WHERE k = ?", (n + 1,))
        conn.execute("COMMIT")
        counted.append(thread_write_bytes() - wb0)
        wal.append(os.path.getsize(folder / "x.db-wal") - size0)
        time.sleep(apart_s)
    conn.close()
    return counted, wal


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.2f}")
    for locking, apart_s in (("NORMAL", 6.0), ("NORMAL", 40.0), ("EXCLUSIVE", 40.0)):
        counted, wal = run(locking, apart_s)
        print(f"{locking:9} {apart_s:4.0f} s apart: write_bytes per commit {counted},"
              f" WAL bytes appended {wal}", flush=True)  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
