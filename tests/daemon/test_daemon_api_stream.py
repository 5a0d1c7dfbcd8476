"""The live event stream (GET /api/v1/stream) of the real daemon on the HIL rig, over real
HTTP: a real control intervention (the grid meter dies behind the rig's Modbus fault proxy;
the guard puts the devices in their safe state) arrives as an `intervention` event, and a
flexibility event the reference aggregator sends through a real Mosquitto arrives as a
`flex` event when the gateway accepts it, and again when the owner opts out through the API.

Each test waits for the event kind itself on the stream: without it, it times out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.app import Daemon
from hems.config import validate
from hems.core.clock import AcceleratedClock
from hems.planning.service import slot_floor
from hems.uplink import envelope
from hems.uplink.keys import load_or_create_key
from hil.aggregator import ReferenceAggregator
from hil.faults import ExceptionRule
from hil.rig import HilRig
from tests.daemon.test_daemon_flex_round_trip import SITE, flex_config, responses
from tests.daemon.test_daemon_full_stack import demo_config
from tests.daemon.test_daemon_health_metrics import GRID_UNIT_ID
from tests.testlib import free_port, mosquitto, poll_json, running, web_credentials
from tests.web.test_api_stream import sse


def of_kind(kind: str, predicate: Any = lambda _d: True) -> Any:
    return lambda s: [e for e in s.events if e[0] == kind and predicate(e[2])]


async def test_a_real_intervention_arrives_on_the_stream(tmp_path: Path) -> None:
    # Noon in June at 30x: the demo home's own figures; the rule checked needs none of them.
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig = HilRig(clock)  # with the Modbus fault proxy in front of the SunSpec server
    web_port = free_port()
    async with rig:
        assert rig.sunspec_faults is not None
        cfg = validate(demo_config(tmp_path, rig.sunspec_port, free_port(), web_port))
        token = await web_credentials(cfg.storage.path)
        daemon = Daemon(cfg, clock)
        async with (
            running(daemon),
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as c,
        ):
            await asyncio.wait_for(daemon.started.wait(), 30)
            await poll_json(c, "/api/v1/control", lambda b: b["status"]["healthy"], 30)
            await poll_json(
                c, "/api/v1/site", lambda b: b["summary"]["grid_power_w"] is not None, 30
            )
            async with sse(c) as stream:
                await stream.wait_for(of_kind("site"))  # open, and the watcher has looked
                # The meter answers every request with a Modbus exception: no grid readings,
                # so the guard cannot check the limits and commands the safe state.
                seen = len(stream.events)
                rig.sunspec_faults.faults.exceptions.append(
                    ExceptionRule(0, 0x10000, unit_id=GRID_UNIT_ID)
                )

                def grid_stale(d: dict[str, Any]) -> bool:
                    return (d["rule"], d["event"], d["device_id"]) == (
                        "stale", "start", "battery"
                    ) and d["reason"].startswith("grid meter stale")  # fmt: skip

                events = await stream.wait_for(
                    lambda s: [
                        e for e in s.events[seen:] if e[0] == "intervention" and grid_stale(e[2])
                    ],
                    timeout_s=60,
                )
            intervention = events[0][2]
            assert intervention["after"] == {"mode": "idle", "power_w": 0.0}  # the safe state
            assert set(intervention) == {"at", "rule", "device_id", "event", "reason",
                                         "before", "after"}  # fmt: skip
            # The same entry as the API's list of interventions.
            listed = (await c.get("/api/v1/control/interventions")).json()["interventions"]
            assert intervention in listed
            rig.sunspec_faults.faults.exceptions.clear()


async def test_flex_events_from_the_aggregator_arrive_on_the_stream(tmp_path: Path) -> None:
    clock = AcceleratedClock(60, datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    agg_key = Ed25519PrivateKey.generate()
    web_port = free_port()
    rig = HilRig(clock, fault_proxy=False)
    async with mosquitto(tmp_path / "broker") as broker, rig:
        cfg = flex_config(
            tmp_path, rig.sunspec_port, web_port, broker.port,
            envelope.public_key_text(agg_key.public_key()),
        )  # fmt: skip
        db_path = Path(cfg.storage.path)
        gateway = load_or_create_key(cfg.uplink.key_path(db_path))
        token = await web_credentials(db_path)
        agg = ReferenceAggregator(
            "127.0.0.1", broker.port, key=agg_key,
            gateway_keys={SITE: gateway.public_key()}, clock=clock,
        )  # fmt: skip
        daemon = Daemon(cfg, clock)
        async with (
            running(daemon, agg),
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as c,
        ):
            async with asyncio.timeout(20):
                await daemon.started.wait()
                assert daemon.uplink is not None
                await daemon.uplink.connected.wait()
                await agg.connected.wait()
            async with sse(c) as stream:
                await stream.wait_for(of_kind("site"))  # open, and the watcher has looked
                start = slot_floor(clock.now(), 30) + timedelta(hours=2)  # on a half hour
                sent = await agg.send_event(
                    SITE,
                    {
                        "event_id": "evt-sse",
                        "modification_number": 0,
                        "kind": "turn_down",
                        "start": start.isoformat(),
                        "end": (start + timedelta(minutes=30)).isoformat(),
                        "import_cap_w": 1000,
                    },
                )
                await agg.wait_for(
                    lambda: any(r["ref_id"] == sent["id"] for r in responses(agg)), 10
                )
                accepted = await stream.wait_for(
                    of_kind("flex", lambda d: d["events"].get("evt-sse/0") == "accepted"),
                    timeout_s=30,
                )
                # The owner opts out through the API: the stream says so too.
                r = await c.post("/api/v1/flex/events/evt-sse/opt-out")
                assert r.status_code == 200, r.text
                opted = await stream.wait_for(
                    of_kind("flex", lambda d: d["events"].get("evt-sse/0") == "opted_out"),
                    timeout_s=30,
                )
            assert opted[0][1] > accepted[0][1]
            assert_flex_data(accepted[0][2], "accepted")
            assert_flex_data(opted[0][2], "opted_out")
            book = (await c.get("/api/v1/flex/events")).json()["events"]
            assert [(e["event_id"], e["status"]) for e in book] == [("evt-sse", "opted_out")]


def assert_flex_data(data: dict[str, Any], status: str) -> None:
    assert data == {"events": {"evt-sse/0": status}}
