"""Applying a new config from the installer's page: `request_restart` ends `Daemon.run`
cleanly (so systemd's `Restart=always` starts the process again with the new file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hems.app import Daemon
from hems.config import validate
from hems.core import ManualClock
from tests.web.test_web_installer import T0


async def test_request_restart_ends_run_cleanly(tmp_path: Path) -> None:
    cfg = validate(
        {
            "site": {"id": "home"},
            "storage": {"path": str(tmp_path / "hems.db")},
            "web": {"enabled": False},
        }
    )
    daemon = Daemon(cfg, ManualClock(T0), config_path=tmp_path / "hems.yaml")
    run = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.started.wait(), 30)
    daemon.request_restart()
    await asyncio.wait_for(run, 30)  # returns (no exception): the process exits with 0
    assert run.done() and run.exception() is None
    assert daemon.restart_requested.is_set()
