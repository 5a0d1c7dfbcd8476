"""Fixtures for the smart-meter tests: the shared telegram corpus and a Mosquitto broker."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "meters"
MOSQUITTO = "/usr/sbin/mosquitto"


@pytest.fixture
def meter_data() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"shared meter test data not found at {TESTDATA}")
    return TESTDATA


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A broker on a free loopback port; yields the port."""
    if not Path(MOSQUITTO).exists() and shutil.which("mosquitto") is None:
        pytest.fail(f"{MOSQUITTO} is required for the Glow tests (apt install mosquitto)")
    port = _free_port()
    user = pwd.getpwuid(os.getuid()).pw_name
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser {user}\n"
    )
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {log.read_text()[-1000:]}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
