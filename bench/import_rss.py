"""RSS each step of an import chain adds, in this interpreter (run it with the Pi-like venv).

Run: /tmp/rtvenv/bin/python bench/import_rss.py structlog pydantic hems.config aiohttp.web \
         hems.web.server hems.app.daemon hems.devices.ocpp.server
A step is a module to import, or `exec:STATEMENT` (e.g. `exec:import holidays;
holidays.country_holidays('GB', subdiv='ENG')`). Order matters: a step counts only what the
steps before it did not load. `--modules FILE` first imports every module named in FILE (one
a line, e.g. a daemon's sys.modules) and prints the RSS they come to. No argparse: its import
would be counted in the interpreter's own figure.
"""

import importlib
import sys


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def row(step: str, added: str, rss: float, modules: str = "") -> None:
    print(f"| {step} | {added} | {rss:.1f} MiB | {modules} |")


def main(argv: list[str]) -> None:
    print("| step | RSS added | RSS | modules added |\n|---|---|---|---|")
    row("(interpreter)", "", rss_mib())
    if argv[:1] == ["--modules"]:
        with open(argv[1]) as f:
            names = [n for n in f.read().split() if not n.startswith("__")]
        failed = 0
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # e.g. a module that only imports as its package's __main__
                failed += 1
        row(f"{len(names)} modules of {argv[1]} ({failed} failed)", "", rss_mib())
        argv = argv[2:]
    before = rss_mib()
    for step in argv:
        n0 = len(sys.modules)
        if step.startswith("exec:"):
            exec(step.removeprefix("exec:"), {})
        else:
            importlib.import_module(step)
        now = rss_mib()
        row(f"`{step}`", f"{now - before:+.1f} MiB", now, str(len(sys.modules) - n0))
        before = now


if __name__ == "__main__":
    main(sys.argv[1:])
