"""The systemd unit and the notify protocol the daemon speaks to it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hems.sdnotify import Notifier, watchdog_interval_s

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "hems.service"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_unit_is_notify_watchdog_restart_and_hardened() -> None:
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["always"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["User"] == ["hems"] and d["StateDirectory"] == ["hems"]
    for key in (
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "RestrictAddressFamilies",
        "ProtectKernelTunables",
        "SystemCallFilter",
    ):
        assert key in d, key
    assert d["ProtectSystem"] == ["strict"]
    # The state folder, and /etc/hems where the installer's page saves the config; nothing
    # else of the system is writable.
    assert d["ReadWritePaths"] == ["/var/lib/hems /etc/hems"]
    assert "/hems run -c " in d["ExecStart"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_verifies_with_systemd_analyze(tmp_path: Path) -> None:
    hems_bin = Path(sys.executable).with_name("hems")
    unit = tmp_path / "hems.service"
    unit.write_text(UNIT.read_text().replace("/opt/hems/venv/bin/hems", str(hems_bin)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "hems.service" in line and "Documentation" not in line
    ]
    assert problems == []


def test_notifier_sends_datagrams(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        n = Notifier(str(path))
        assert n.ready() and n.watchdog()
        assert server.recv(100) == b"READY=1\nSTATUS=running"
        assert server.recv(100) == b"WATCHDOG=1"
    assert not Notifier("").ready()  # outside systemd: a no-op


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 15
    monkeypatch.setenv("WATCHDOG_PID", "1")  # for another process
    assert watchdog_interval_s() is None


def test_notify_never_blocks_when_the_receiver_stops_reading(tmp_path: Path) -> None:
    """A unix datagram queue holds ~10 messages; a manager that stops reading must not freeze
    the daemon's event loop (a blocking send would wait for ever): the notice is dropped."""
    import threading

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        notifier = Notifier(str(path))
        results: list[bool] = []
        sender = threading.Thread(
            target=lambda: results.extend(notifier.watchdog() for _ in range(200)), daemon=True
        )
        sender.start()
        sender.join(timeout=30)
        assert not sender.is_alive(), "notify blocked on a full queue"
        assert results[0] is True and results[-1] is False  # the first fit, the last dropped
        receiver.setblocking(False)
        assert receiver.recv(64) == b"WATCHDOG=1"
        assert notifier.watchdog() is True  # room again: sent afresh
