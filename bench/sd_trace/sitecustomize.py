"""WAL frames per commit, by caller and by table/index (bench/sd_budget.py --trace PATH).

Loaded into the soak's daemon process through PYTHONPATH (this folder), outside hems/: it
wraps `Database.call` to name the caller and the connection's COMMIT to read, from the
-shm wal-index header, how many frames the commit appended; the frames' page numbers are
read from the -wal file and mapped to tables and indexes with the dbstat virtual table.
When the WAL restarts (after a checkpoint) the distinct pages of the finished generation
are counted as written to the main file. Measurement only: it costs reads, not writes.
"""

from __future__ import annotations

import atexit
import json
import os
import struct
import sys

_OUT = os.environ.get("HEMS_SD_TRACE")
if _OUT:
    sys.path.insert(0, os.environ.get("HEMS_SD_TRACE_REPO", "."))
    from hems.store import db as _dbmod

    _FRAME = 24
    _stats: dict = {
        "callers": {}, "checkpoint_pages": {}, "checkpoints": 0, "commits": 0,
        # The database thread's own write_bytes (/proc/thread-self/io): what the kernel
        # counts for its commits (4 KiB page-cache pages dirtied: the WAL's, the -shm's
        # mmap'd ones, the main file's at a checkpoint) and for everything else it runs.
        "thread_write_bytes_commit": 0, "thread_write_bytes_other": 0, "wal_frame_bytes": 0,
    }  # fmt: skip
    _state: dict = {"caller": "?", "page_size": 4096, "names": {}, "gen": set(), "gen_frames": 0}

    def _caller(fn: object) -> str:
        name = getattr(fn, "__qualname__", "?")
        return name.replace(".<locals>", "").replace(".<lambda>", "")

    def _dump() -> None:
        # The WAL generation not checkpointed yet: its frames and distinct pages (what its
        # checkpoint will copy), for runs too short to reach one.
        _stats["open_generation"] = {"frames": _state["gen_frames"], "pages": len(_state["gen"])}
        with open(_OUT, "w") as f:
            json.dump(_stats, f, indent=1, sort_keys=True)

    atexit.register(_dump)

    # The wal-index (-shm) layout (SQLite's wal.c): a 136-byte header, then per block the
    # frames' page numbers (4 B each; 4062 in the first block, 4096 after) and a hash table of
    # 8192 two-byte slots (slot = pgno * 383 mod 8192, probed onward when taken).
    _HDR, _B0, _BN, _SLOTS = 136, 4062, 4096, 8192

    def _shm_pages(frames: list[tuple[int, int]]) -> set[int]:
        """The 4 KiB pages of the -shm a commit of (frame no., page no.) writes (header,
        page numbers, hash slots; the slot probing is left out)."""
        pages = {0}
        for i, pgno in frames:
            if i <= _B0:
                base, j = 0, i - 1
                pg_off = _HDR + 4 * j
            else:
                k = (i - _B0 - 1) // _BN + 1
                base, j = 32768 * k, (i - _B0 - 1) % _BN
                pg_off = base + 4 * j
            hash_off = base + (_HDR + 4 * _B0 if base == 0 else 4 * _BN)
            pages.add(pg_off // 4096)
            pages.add((hash_off + 2 * ((pgno * 383) % _SLOTS)) // 4096)
        return pages

    def _thread_wb() -> int:
        try:
            with open("/proc/thread-self/io", "rb") as f:
                for line in f:
                    if line.startswith(b"write_bytes:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    class _Conn:
        def __init__(self, conn, path: str) -> None:
            self._c = conn
            self._wal = path + "-wal"
            self._shm = path + "-shm"

        def __getattr__(self, name: str):
            return getattr(self._c, name)

        def _hdr(self) -> tuple[int, bytes]:
            try:
                with open(self._shm, "rb") as f:
                    b = f.read(48)
                return struct.unpack_from("<I", b, 16)[0], b[32:40]
            except OSError:
                return 0, b""

        def _name(self, page: int) -> str:
            names = _state["names"]
            if page not in names:
                for n, p in self._c.execute("SELECT name, pageno FROM dbstat").fetchall():
                    names[int(p)] = n
            return names.get(page, "freelist/other")

        def executemany(self, sql, *args):
            wb0 = _thread_wb()
            try:
                return self._c.executemany(sql, *args)
            finally:
                _stats["thread_write_bytes_other"] += _thread_wb() - wb0

        def execute(self, sql, *args):
            if sql != "COMMIT":
                wb0 = _thread_wb()
                try:
                    return self._c.execute(sql, *args)
                finally:
                    _stats["thread_write_bytes_other"] += _thread_wb() - wb0
            before, salt0 = self._hdr()
            wb0 = _thread_wb()
            r = self._c.execute(sql, *args)
            _stats["thread_write_bytes_commit"] += _thread_wb() - wb0
            after, salt = self._hdr()
            first = before + 1
            if salt != salt0 or after < before:
                # The WAL restarted: the previous generation went to the main file.
                blocks = {(p - 1) * _state["page_size"] // 4096 for p in _state["gen"]}
                _stats["cold_checkpoint_bytes"] = _stats.get(
                    "cold_checkpoint_bytes", 0
                ) + 4096 * len(blocks)
                for page in _state["gen"]:
                    nm = self._name(page)
                    cp = _stats["checkpoint_pages"]
                    cp[nm] = cp.get(nm, 0) + 1
                _stats["checkpoints"] += 1
                _state["gen"] = set()
                _state["gen_frames"] = 0
                first = 1
            pages = []
            with open(self._wal, "rb") as f:
                ps = struct.unpack(">I", f.read(12)[8:12])[0]  # the WAL header's page size
                _state["page_size"] = _stats["page_size"] = ps
                for i in range(first, after + 1):
                    f.seek(32 + (i - 1) * (ps + _FRAME))
                    pages.append(struct.unpack(">I", f.read(4))[0])
            _stats["wal_frame_bytes"] += len(pages) * (ps + _FRAME)
            # What the commit costs when the page cache has written everything back since
            # the one before (commits more than ~30 s apart, vm.dirty_expire_centisecs): each
            # 4 KiB page of the -wal and -shm it touches is counted (and written) whole.
            if pages:
                lo = 32 + (first - 1) * (ps + _FRAME)
                hi = 32 + after * (ps + _FRAME)
                wal_blocks = (hi - 1) // 4096 - lo // 4096 + 1
                shm = _shm_pages(list(zip(range(first, after + 1), pages, strict=True)))
                c_cold = 4096 * (wal_blocks + len(shm))
                _stats["cold_commit_bytes"] = _stats.get("cold_commit_bytes", 0) + c_cold
            _state["gen"].update(pages)
            _state["gen_frames"] += len(pages)
            c = _stats["callers"].setdefault(
                _state["caller"], {"commits": 0, "frames": 0, "objects": {}}
            )
            c["commits"] += 1
            c["frames"] += len(pages)
            for page in pages:
                nm = self._name(page)
                c["objects"][nm] = c["objects"].get(nm, 0) + 1
            _stats["commits"] += 1
            if _stats["commits"] % 50 == 0:
                _dump()
            return r

    _orig_init = _dbmod.Database.__init__
    _orig_call = _dbmod.Database.call

    def _init(self, conn, executor, path=None) -> None:
        if path is not None:
            conn = _Conn(conn, str(path))
        _orig_init(self, conn, executor, path)

    async def _call(self, fn):
        name = _caller(fn)

        def named(conn):
            _state["caller"] = name
            return fn(conn)

        return await _orig_call(self, named)

    _dbmod.Database.__init__ = _init
    _dbmod.Database.call = _call
