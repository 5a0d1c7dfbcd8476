"""Home Assistant discovery runs from the daemon even when no aggregator is configured."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt

from hems.app import Daemon
from hems.config import validate
from hems.core.clock import RealClock
from tests.testlib import running

if TYPE_CHECKING:  # fixtures come from conftest.py
    from hil.aggregator import MosquittoBroker


async def test_daemon_publishes_discovery_with_uplink_disabled(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg = validate(
        {
            "site": {"id": "ha-only"},
            "storage": {"path": str(tmp_path / "hems.db")},
            "web": {"enabled": False},
            "uplink": {
                "enabled": False,
                "home_assistant": {
                    "enabled": True,
                    "broker_host": "127.0.0.1",
                    "broker_port": broker.port,
                },
            },
        }
    )
    daemon = Daemon(cfg, RealClock())
    async with running(daemon):
        await asyncio.wait_for(daemon.started.wait(), 10)
        assert "home-assistant" in daemon.services and "uplink" not in daemon.services
        topics: set[str] = set()
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("homeassistant/#")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    async for m in client.messages:
                        topics.add(m.topic.value)
                        if len(topics) >= 3:
                            break
        assert any(t.endswith("/config") and "ha-only" in t for t in topics), topics
