"""Where the RSS between two processes is: their /proc/PID/smaps compared mapping by mapping.

Run: python bench/smaps_diff.py A.smaps B.smaps   (e.g. two `bench_daemon.py --probe` runs'
end.smaps). Prints, per file (or [heap] / [anon]), the RSS and the anonymous part B has more
than A, largest first; file-backed pages (RSS minus Anonymous) are clean shared-library pages
the kernel can drop and read back, the anonymous ones are the process's own.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict

HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def by_mapping(path: str) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    name = "[anon]"
    with open(path) as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                name = re.sub(r".*/site-packages/", "", m.group(1)) or "[anon]"
                continue
            key, _, rest = line.partition(":")
            if key in ("Rss", "Anonymous"):
                out[name][key] += int(rest.split()[0])
    return out


def main(a_path: str, b_path: str) -> None:
    a, b = by_mapping(a_path), by_mapping(b_path)
    rows = []
    for name in set(a) | set(b):
        rss = (b[name]["Rss"] - a[name]["Rss"]) / 1024
        anon = (b[name]["Anonymous"] - a[name]["Anonymous"]) / 1024
        rows.append((rss, anon, name))
    rows.sort(reverse=True)
    print("| mapping | RSS added | of it anonymous | file-backed |\n|---|---|---|---|")
    for rss, anon, name in rows:
        if abs(rss) >= 0.1:
            print(f"| {name} | {rss:+.2f} MiB | {anon:+.2f} | {rss - anon:+.2f} |")
    total = sum(r[0] for r in rows)
    total_anon = sum(r[1] for r in rows)
    print(f"| total | {total:+.2f} MiB | {total_anon:+.2f} | {total - total_anon:+.2f} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
