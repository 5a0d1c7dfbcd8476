"""Run `hems.cli` with a memory probe: SIGUSR1 writes the process's `sys.modules`, a
tracemalloc snapshot (when HEMS_PROBE_TRACEMALLOC=1, started before any hems import) and a
copy of /proc/self/smaps and the count and shallow size of the objects the garbage collector
tracks, by type, into the folder HEMS_PROBE_DIR, as `NAME.modules`, `NAME.snap`, `NAME.smaps`
and `NAME.types` with NAME from the file HEMS_PROBE_DIR/name (default "probe").

Used by `bench/bench_daemon.py --probe DIR`; the handler runs in the main thread between
bytecodes, so it sees the daemon between two event-loop steps.
"""

import gc
import os
import signal
import sys
import tracemalloc
from pathlib import Path

OUT = Path(os.environ["HEMS_PROBE_DIR"])
if os.environ.get("HEMS_PROBE_TRACEMALLOC") == "1":
    tracemalloc.start(int(os.environ.get("HEMS_PROBE_FRAMES", "12")))


def dump(_signum: int, _frame: object) -> None:
    name_file = OUT / "name"
    name = name_file.read_text().strip() if name_file.exists() else "probe"
    (OUT / f"{name}.modules").write_text("\n".join(sorted(sys.modules)) + "\n")
    (OUT / f"{name}.smaps").write_text(Path("/proc/self/smaps").read_text())
    counts: dict[str, list[int]] = {}
    for obj in gc.get_objects():
        entry = counts.setdefault(type(obj).__qualname__, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
    (OUT / f"{name}.types").write_text(
        "".join(f"{n} {c} {b}\n" for n, (c, b) in sorted(counts.items(), key=lambda i: -i[1][1]))
    )
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(OUT / f"{name}.snap"))
    (OUT / f"{name}.done").write_text("")


signal.signal(signal.SIGUSR1, dump)

from hems.cli import main  # noqa: E402

sys.exit(main())
