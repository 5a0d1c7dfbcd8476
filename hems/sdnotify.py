"""systemd notification protocol (sd_notify), without libsystemd.

A datagram to $NOTIFY_SOCKET: READY=1 once started, WATCHDOG=1 while healthy, STOPPING=1
on the way out. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            path = "\0" + path[1:]  # abstract namespace
        self._path = path

    @property
    def enabled(self) -> bool:
        return bool(self._path)

    def notify(self, state: str) -> bool:
        if not self._path:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never wait: this runs on the event loop, and a receiver that stops reading
                # (a hung manager; its queue holds only ~10 datagrams) would freeze the daemon.
                # A notice that does not fit is dropped; the next one is sent afresh.
                sock.setblocking(False)
                sock.connect(self._path)
                sock.send(state.encode())
        except OSError:  # includes BlockingIOError: the receiver's queue is full
            return False
        return True

    def ready(self) -> bool:
        return self.notify("READY=1\nSTATUS=running")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")


def watchdog_interval_s() -> float | None:
    """Half of WatchdogSec (systemd's advice), or None when no watchdog is set for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
