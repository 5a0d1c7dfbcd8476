"""On the HIL rig: the owner's EV target and charging mode survive a daemon restart while
the car stays plugged in, and the restarted planner plans for the owner's target (not for
the charger's default)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from hems.app import Daemon
from hems.config import validate
from hems.core.clock import AcceleratedClock
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import poll_json, rig_with_car, running, web_credentials


async def test_the_owners_ev_target_survives_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    start = datetime(2026, 6, 10, 18, 0, tzinfo=UTC)
    clock = AcceleratedClock(30, start)
    rig, _car, ocpp_port, web_port = rig_with_car(clock)
    async with rig:
        cfg = validate(demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port))
        token = await web_credentials(cfg.storage.path)
        first = Daemon(cfg, clock)
        async with running(first):
            await asyncio.wait_for(first.started.wait(), 15)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                await poll_json(client, "/api/chargers", lambda c: "wallbox" in c["sessions"], 20)
                r = await client.post(
                    "/api/ev-session",
                    json={"charger_id": "wallbox", "energy_kwh": 22, "departure": "06:15"},
                )
                assert r.status_code == 200, r.text
                owner = r.json()["result"]
                assert owner["energy_wh"] == 22000 and owner["set_by"] == "owner"
                r = await client.post(
                    "/api/ev-mode", json={"charger_id": "wallbox", "mode": "pv-only"}
                )
                assert r.status_code == 200, r.text
                r = await client.post("/api/ev-mode", json={"charger_id": "wallbox", "mode": "x"})
                assert r.status_code == 400 and r.json()["error"].startswith("mode:")
            assert first.ev_sessions is not None
            await asyncio.wait_for(first.ev_sessions.flushed(), 10)

        second = Daemon(cfg, clock)  # same database; the car never left
        async with running(second):
            await asyncio.wait_for(second.started.wait(), 15)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                chargers = await poll_json(
                    client, "/api/chargers", lambda c: "wallbox" in c["sessions"], 20
                )
            session = chargers["sessions"]["wallbox"]
            assert chargers["modes"] == {"wallbox": "pv-only"}  # the owner's mode, kept
            assert (session["energy_wh"], session["set_by"]) == (22000, "owner")
            at = datetime.fromisoformat
            assert at(session["departure"]) == at(owner["departure"])
            # The session's plug-in time is kept (stored to the millisecond), not the restart's.
            assert abs(at(session["plugged_at"]) - at(owner["plugged_at"])) < timedelta(
                milliseconds=1
            )
            assert second.planner is not None

            async def planned_for_owner() -> None:
                while True:
                    problem = second.planner.last_problem  # type: ignore[union-attr]
                    if problem is not None and problem.evs:
                        return
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(planned_for_owner(), 20)
            ev = second.planner.last_problem.evs[0]  # type: ignore[union-attr]
            # The owner's 22 kWh less what the car took since (the default would be 15 kWh).
            assert 21_000 < ev.energy_wh <= 22_000
            assert ev.departure == datetime.fromisoformat(owner["departure"])
