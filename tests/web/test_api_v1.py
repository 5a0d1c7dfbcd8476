"""The REST API v1 against the real daemon on the HIL rig (simulated home and car over
Modbus and OCPP), over real HTTP: every read endpoint, the changes going through the page's
actions, problem+json naming the field for bad input, the live stream after a change, the
generated OpenAPI document (openapi-spec-validator) and schemathesis against it.

The bare-server test checks what the demo site cannot show (masked secrets in /config). The
config write (PATCH /api/v1/config) runs on a daemon started from a file, through its restart."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate as validate_spec

from hems.app import Daemon
from hems.config import load_config, validate
from hems.core.clock import AcceleratedClock, ManualClock, RealClock
from hems.core.readings import Quantity
from hems.store.db import Database
from hems.web.api import PREFIX, ROUTES, openapi
from hems.web.auth import AuthStore, SecurityEntry
from hems.web.server import _PUBLIC
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import OWNER_PASSWORD, free_port, poll_json, rig_with_car, running
from tests.web.test_api_stream import sse
from tests.web.test_web_security import CSP, bare, logged_in

PROBLEM = "application/problem+json"


async def tokens(db_path: Path) -> tuple[str, str]:
    """The owner's password, a read-write and a read-only token, in the daemon's database."""
    db = await Database.open(db_path)
    try:
        auth = AuthStore(db, RealClock())
        await auth.set_password(OWNER_PASSWORD, "test")
        return await auth.create_token("rw", True), await auth.create_token("ro", False)
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def demo_daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, str, str, str]]:
    """The demo home on the rig with its car; (daemon, base url, rw token, ro token) once the
    control loop runs, the plan exists and the charger is connected."""
    clock = AcceleratedClock(10, datetime(2026, 6, 10, 18, 0, tzinfo=UTC))
    rig, _car, ocpp_port, web_port = rig_with_car(clock)
    async with rig:
        # From a file, as `hems run` starts: PATCH /api/v1/config is live (it edits this).
        path = write_config(tmp_path, demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port))
        cfg = load_config(path)
        rw, ro = await tokens(cfg.storage.path)
        daemon = Daemon(cfg, clock, config_path=path)
        async with running(daemon):
            await asyncio.wait_for(daemon.started.wait(), 30)
            base = f"http://127.0.0.1:{web_port}"
            async with httpx.AsyncClient(base_url=base, headers=bearer(rw)) as c:
                # Healthy: the first writes may time out while the rig's devices come up.
                await poll_json(c, "/api/v1/control", lambda b: b["status"]["healthy"], 30)
                await poll_json(
                    c, "/api/v1/site", lambda b: b["summary"]["grid_power_w"] is not None, 30
                )
                # A plan with the battery in it: the first may come before its first poll.
                await poll_json(
                    c,
                    "/api/v1/plan",
                    lambda b: (
                        b["plan"] is not None and "battery" in b["plan"]["slots"][0]["soc_pct"]
                    ),
                    60,
                )
                await poll_json(c, "/api/v1/chargers", lambda b: "wallbox" in b["chargers"], 30)
            yield daemon, base, rw, ro


def write_config(tmp_path: Path, raw: dict[str, Any]) -> Path:
    """The config as a hand-edited file: a comment on top, then the YAML."""
    path = tmp_path / "hems.yaml"
    path.write_text(COMMENT + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


COMMENT = "# The installer's notes: kept by every change through the API.\n"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(r: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"] and body["detail"]
    assert field in [e["field"] for e in body["errors"]], body
    return body


@pytest.mark.timeout(300)
async def test_api_v1_reads_changes_and_errors_on_the_daemon(tmp_path: Path) -> None:
    async with (
        demo_daemon(tmp_path) as (daemon, base, rw, ro),
        httpx.AsyncClient(base_url=base, headers=bearer(rw)) as c,
    ):
        # -- reads -------------------------------------------------------------------------
        site = (await c.get("/api/v1/site")).json()
        assert site["site"] and site["summary"]["grid_power_w"] is not None
        assert {r["device_id"] for r in site["readings"]} >= {"grid", "pv", "battery"}
        devices = {d["device_id"]: d for d in (await c.get("/api/v1/devices")).json()["devices"]}
        assert devices["grid"] == {"device_id": "grid", "role": "grid", "stale": False,
                                   "reason": None}  # fmt: skip
        plan = (await c.get("/api/v1/plan")).json()["plan"]
        assert plan["status"] == "optimal" and plan["slots"]
        assert "battery" in plan["slots"][0]["soc_pct"]
        control = (await c.get("/api/v1/control")).json()
        assert control["status"]["healthy"] is True
        assert isinstance((await c.get("/api/v1/control/interventions")).json()["interventions"],
                          list)  # fmt: skip
        chargers = (await c.get("/api/v1/chargers")).json()
        assert chargers["chargers"]["wallbox"]["identity"] == "DEMO-CP1"
        batteries = (await c.get("/api/v1/batteries")).json()
        assert "idle" in batteries["modes"]["battery"]
        config = (await c.get("/api/v1/config")).json()["config"]
        assert config["site"]["id"] == "demo-home"
        series = await c.get("/api/v1/series", params={"device": "grid", "minutes": 60})
        assert series.status_code == 200 and series.json()["quantity"] == "power_w"
        health = await httpx.AsyncClient(base_url=base).get("/api/v1/health")  # public
        assert health.status_code in (200, 503) and "reasons" in health.json()
        # No flexibility on the demo site: a problem saying so, not an empty 200.
        assert_problem(await c.get("/api/v1/flex/events"), 404, "flex-events")
        # The unversioned routes the page uses still answer as before.
        assert (await c.get("/api/state")).json()["site"] == site["site"]
        assert "error" in (await c.post("/api/ev-mode", json={})).json()

        # -- changes, through the page's actions ----------------------------------------------
        r = await c.post("/api/v1/chargers/wallbox/mode", json={"mode": "pv-only"})
        assert r.status_code == 200 and r.json() == {"charger_id": "wallbox", "mode": "pv-only"}
        assert daemon.control is not None and daemon.control.ev_mode("wallbox") == "pv-only"
        r = await c.post("/api/v1/batteries/battery/mode", json={"mode": "idle", "minutes": 30})
        assert r.status_code == 200 and r.json()["mode"] == "idle"
        assert daemon.control.status()["overrides"]["battery"]["mode"] == "idle"

        # -- the stream delivers the new plan after the EV target changes -------------------
        before = plan["created_at"]
        async with sse(c) as stream:
            r = await c.post(
                "/api/v1/chargers/wallbox/session",
                json={"soc_pct": 30, "target_soc_pct": 80, "departure": "06:00"},
            )
            assert r.status_code == 200, r.text
            # 50 % of the car's 60 kWh, on top of what the session has delivered already (the
            # demo car is charging; the counter only grows, so read after is an upper bound).
            delivered_wh = daemon.state.fresh_value("wallbox", Quantity.SESSION_ENERGY_WH) or 0.0
            assert 30_000 <= r.json()["energy_wh"] <= 30_000 + delivered_wh, delivered_wh
            event = await stream.wait_for(
                lambda x: [e for e in x.events if e[0] == "plan" and e[2]["created_at"] != before],
                timeout_s=60,
            )
            assert event[0][1] > 0
        sessions = (await c.get("/api/v1/ev-sessions")).json()["sessions"]
        assert sessions["wallbox"]["target_soc_pct"] == 80

        # -- bad input: problem+json naming the field ---------------------------------------
        r = await c.post("/api/v1/batteries/battery/mode", json={"mode": "turbo", "minutes": 5})
        assert_problem(r, 422, "mode")
        r = await c.post("/api/v1/batteries/battery/mode", json={"mode": "idle", "minutes": 0})
        assert_problem(r, 422, "minutes")
        r = await c.post("/api/v1/chargers/wallbox/mode", json={"mode": "fast", "colour": "red"})
        assert_problem(r, 422, "colour")
        r = await c.post("/api/v1/chargers/no-such/mode", json={"mode": "fast"})
        assert_problem(r, 404, "charger_id")
        r = await c.post("/api/v1/chargers/wallbox/session", json={"departure": "tomorrow"})
        assert_problem(r, 422, "energy_kwh")
        r = await c.post(
            "/api/v1/chargers/wallbox/mode",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert_problem(r, 400, "body")
        r = await c.post("/api/v1/chargers/wallbox/mode", data={"mode": "fast"})
        assert_problem(r, 415, "content-type")
        r = await c.post(
            "/api/v1/chargers/wallbox/mode",
            content=b"[" * 70_000,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 413 and r.headers["content-type"].startswith(PROBLEM)
        r = await c.get("/api/v1/series", params={"device": "grid", "minutes": 0})
        assert_problem(r, 422, "minutes")
        r = await c.get("/api/v1/series", params={"device": "grid", "quantity": "nope"})
        assert_problem(r, 422, "quantity")
        assert_problem(await c.get("/api/v1/no/such/thing"), 404, "request")
        assert_problem(await c.delete("/api/v1/site"), 405, "request")
        # Who may: nobody without credentials, a read-only token only reads.
        anon = httpx.AsyncClient(base_url=base)
        assert_problem(await anon.get("/api/v1/site"), 401, "auth")
        r = await anon.post("/api/v1/chargers/wallbox/mode", json={"mode": "off"},
                            headers=bearer(ro))  # fmt: skip
        assert_problem(r, 403, "auth")
        assert (await anon.get("/api/v1/site", headers=bearer(ro))).status_code == 200
        assert daemon.control.ev_mode("wallbox") == "pv-only"  # nothing refused changed it


@pytest.mark.timeout(300)
async def test_openapi_document_is_valid_and_the_daemon_keeps_to_it(tmp_path: Path) -> None:
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    async with demo_daemon(tmp_path) as (_daemon, base, rw, _ro):
        async with httpx.AsyncClient(base_url=base, headers=bearer(rw)) as c:
            spec = (await c.get("/api/v1/openapi.json")).json()
            docs = await c.get("/api/v1/docs")
        validate_spec(spec)  # OpenAPI 3.1, every $ref resolving into components
        assert spec["openapi"] == "3.1.0"
        assert "/api/v1/site" in spec["paths"] and "SiteOut" in spec["components"]["schemas"]
        # The docs page: rendered from the document, no script at all, under the page's CSP.
        assert docs.status_code == 200 and docs.headers["content-security-policy"] == CSP
        assert "<script" not in docs.text and 'id="op-site"' in docs.text
        assert 'id="schema-Problem"' in docs.text

        schema = schemathesis.openapi.from_dict(spec).exclude(path="/api/v1/stream")
        checks = [not_a_server_error, status_code_conformance, content_type_conformance,
                  response_schema_conformance]  # fmt: skip
        failures: list[str] = []
        calls = [0]
        config_writes = [0]

        def run(operation: Any, mode: GenerationMode) -> None:
            # Health answers a documented 503 whenever the rig's grid meter is late on a busy
            # machine: that is its job, not a server error (its schema is still checked).
            health = operation.label == "GET /api/v1/health"
            wanted = [c for c in checks if not (health and c is not_a_server_error)]
            config_write = operation.label == "PATCH /api/v1/config"

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=8, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            def each(case: Any) -> None:
                calls[0] += 1
                if config_write and isinstance(case.body, dict):
                    # Written, never applied: a restart would end the daemon under test.
                    case.body = {**case.body, "restart": False}
                response = case.call(base_url=base, headers=bearer(rw), timeout=15)
                if config_write and response.status_code == 200:
                    config_writes[0] += 1
                case.validate_response(response, checks=wanted)

            try:
                each()
            except Exception as exc:  # collected: one report for every operation
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])

        def run_all() -> None:
            for result in schema.get_all_operations():
                operation = result.ok()
                run(operation, GenerationMode.POSITIVE)
                # Invalid input too, where there is input: it must get a documented 4xx.
                if operation.path_parameters.items or operation.query.items or operation.body.items:
                    run(operation, GenerationMode.NEGATIVE)

        # schemathesis calls synchronously (requests); the daemon serves on this loop.
        await asyncio.wait_for(asyncio.to_thread(run_all), 200)
        assert not failures, "\n\n".join(failures)
        # PATCH /config was live (the daemon runs from a file) and accepted some requests;
        # the file still passes check-config, and the daemon was not restarted.
        assert config_writes[0] > 0
        assert _daemon.config_path is not None
        load_config(_daemon.config_path)
        assert not _daemon.restart_requested.is_set()
        assert calls[0] > 3 * len(spec["paths"])  # it really exercised the API


async def test_config_hides_secrets(tmp_path: Path) -> None:
    raw = demo_config(tmp_path, 1502, 1503, 1504)
    charger = next(d for d in raw["devices"] if d["type"] == "ocpp")
    charger["password"] = "a-charger-secret-0123456789"
    cfg = validate(raw)
    async with bare(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as c:
        assert_problem(await c.get("/api/v1/config", headers=bearer(s.token)), 404, "config")
        s.web.set_config(lambda: cfg)
        r = await c.get("/api/v1/config", headers=bearer(s.read_only))
        assert r.status_code == 200
        assert "a-charger-secret" not in r.text
        wallbox = next(d for d in r.json()["config"]["devices"] if d["id"] == "wallbox")
        assert wallbox["password"] == "**********"


def test_the_documented_public_operations_are_the_guards() -> None:
    """The document says which operations need no credentials; the guard decides. Same set."""
    documented = {PREFIX + op.path for op in ROUTES if op.public}
    assert documented == {p for p in _PUBLIC if p.startswith(PREFIX + "/")} == {"/api/v1/health"}
    spec = openapi(ROUTES)
    open_ops = {
        p for p, item in spec["paths"].items() for op in item.values() if op.get("security") == []
    }
    assert open_ops == documented


@pytest.mark.timeout(120)
async def test_config_patch_writes_the_file_the_daemon_runs_after_its_restart(
    tmp_path: Path,
) -> None:
    """PATCH /api/v1/config on the real daemon started from a file, over real HTTP: who may,
    422 naming the field with the file byte-identical, a valid change written (comments
    kept, previous file as .bak, the security log says who changed what), the response
    saying a restart is needed; the restart ends the daemon, and the daemon started again
    from the file (as systemd does) reads the new value back."""
    raw = demo_config(tmp_path, free_port(), free_port(), free_port())
    path = write_config(tmp_path, raw)
    original = path.read_bytes()
    rw, ro = await tokens(Path(raw["storage"]["path"]))
    base = f"http://127.0.0.1:{raw['web']['port']}"
    clock = ManualClock(datetime(2026, 6, 10, 12, 0, tzinfo=UTC))

    def unchanged() -> None:
        assert path.read_bytes() == original
        assert not path.with_name("hems.yaml.bak").exists()

    daemon = Daemon(load_config(path), clock, config_path=path)
    run = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.started.wait(), 30)
        async with httpx.AsyncClient(base_url=base) as anon:
            change = {"changes": {"limits.fuse_a": 80}}
            assert_problem(await anon.patch("/api/v1/config", json=change), 401, "auth")
            r = await anon.patch("/api/v1/config", json=change, headers=bearer(ro))
            assert_problem(r, 403, "auth")
            unchanged()
        async with httpx.AsyncClient(base_url=base, headers=bearer(rw)) as c:
            # check-config's own message, under the field's path as check-config names it.
            body = assert_problem(
                await c.patch("/api/v1/config", json={"changes": {"limits.fuse_a": 0}}),
                422, "limits.fuse_a",
            )  # fmt: skip
            assert body["errors"] == [{"field": "limits.fuse_a", "reason": "must be > 0.0"}]
            # Not a number (the form's own check), a field the form does not have, and one
            # good value beside a bad one: nothing is written on any error.
            r = await c.patch("/api/v1/config", json={"changes": {"limits.fuse_a": "lots"}})
            assert_problem(r, 422, "limits.fuse_a")
            r = await c.patch("/api/v1/config", json={"changes": {"limits.fuse": 80}})
            assert_problem(r, 422, "limits.fuse")
            r = await c.patch(
                "/api/v1/config",
                json={"changes": {"limits.fuse_a": 80, "devices[1].battery.capacity_wh": -5}},
            )
            assert_problem(r, 422, "devices[1].battery.capacity_wh")
            r = await c.patch("/api/v1/config", json={"changes": {"limits.fuse_a": [80]}})
            assert_problem(r, 422, "changes.limits.fuse_a")  # not a scalar: the body's model
            unchanged()

            # Valid, written, not applied yet: the running config is still the old one.
            r = await c.patch(
                "/api/v1/config", json={"changes": {"limits.fuse_a": 80}, "restart": False}
            )
            assert r.status_code == 200, r.text
            assert r.json() == {
                "changed": ["limits.fuse_a"],
                "written": True,
                "backup": str(path.with_name("hems.yaml.bak")),
                "restart_required": True,
                "restarting": False,
                "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
            text = path.read_text()
            assert text.startswith(COMMENT) and "  fuse_a: 80\n" in text
            assert text == original.decode().replace("  fuse_a: 60\n", "  fuse_a: 80\n")
            assert path.with_name("hems.yaml.bak").read_bytes() == original
            assert (await c.get("/api/v1/config")).json()["config"]["limits"]["fuse_a"] == 60
            assert not daemon.restart_requested.is_set()
            entries = await security_entries(Path(raw["storage"]["path"]))
            assert ("config-changed", "config file changed: limits.fuse_a (token 'rw')") in [
                (e.kind, e.detail) for e in entries
            ]
            # Nothing new to write, but the file is not what runs: restart now.
            r = await c.patch("/api/v1/config", json={"changes": {}})
            assert r.status_code == 200, r.text
            assert r.json()["written"] is False
            assert r.json()["restart_required"] is True and r.json()["restarting"] is True
        await asyncio.wait_for(run, 30)  # the restart ends run() cleanly (systemd starts us)
        assert run.exception() is None
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    daemon = Daemon(load_config(path), clock, config_path=path)
    async with running(daemon):
        await asyncio.wait_for(daemon.started.wait(), 30)
        async with httpx.AsyncClient(base_url=base, headers=bearer(rw)) as c:
            config = (await c.get("/api/v1/config")).json()["config"]
            assert config["limits"]["fuse_a"] == 80
            # What runs is the file: no restart needed for a change to the same value.
            read = (await c.get("/api/v1/config")).json()["file_sha256"]
            assert read == hashlib.sha256(path.read_bytes()).hexdigest()
            r = await c.patch("/api/v1/config", json={"changes": {"limits.fuse_a": 80.0}})
            assert r.json() == {"changed": [], "written": False, "backup": None,
                                "restart_required": False, "restarting": False,
                                "file_sha256": read}  # fmt: skip
            # Against what was read: a hand edit made since is not overwritten (409).
            edited = path.read_text().replace("  fuse_a: 80\n", "  fuse_a: 63\n")
            path.write_text(edited)
            change = {"changes": {"limits.fuse_a": 70}, "base_sha256": read, "restart": False}
            assert_problem(await c.patch("/api/v1/config", json=change), 409, "base_sha256")
            assert path.read_text() == edited
            change["base_sha256"] = hashlib.sha256(edited.encode()).hexdigest()
            r = await c.patch("/api/v1/config", json=change)
            assert r.json()["changed"] == ["limits.fuse_a"], r.text
            assert "  fuse_a: 70\n" in path.read_text()
            # null removes the key: the model's default applies.
            change = {"changes": {"limits.battery_reserve_pct": None}, "restart": False}
            r = await c.patch("/api/v1/config", json=change)
            assert r.json()["changed"] == ["limits.battery_reserve_pct"], r.text
            assert "battery_reserve_pct" not in path.read_text()
            # A file broken by hand is not touched: 409 until it is fixed.
            good = path.read_bytes()
            path.write_text("site: [unclosed\n")
            r = await c.patch("/api/v1/config", json={"changes": {"limits.fuse_a": 70}})
            assert_problem(r, 409, "config")
            assert path.read_text() == "site: [unclosed\n"
            path.write_bytes(good)
        # The owner's page session may too, with its CSRF token (not without).
        async with logged_in(base) as (session, csrf):
            change = {"changes": {"site.name": "Renamed home"}, "restart": False}
            r = await session.patch("/api/v1/config", json=change)
            assert_problem(r, 403, "csrf")
            r = await session.patch("/api/v1/config", json=change, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200 and r.json()["changed"] == ["site.name"], r.text
        assert "  name: Renamed home\n" in path.read_text()
        assert not daemon.restart_requested.is_set()
    entries = await security_entries(Path(raw["storage"]["path"]))
    assert ("config-changed", "config file changed: site.name (owner session)") in [
        (e.kind, e.detail) for e in entries
    ]


async def security_entries(db_path: Path) -> list[SecurityEntry]:
    db = await Database.open(db_path)
    try:
        return await AuthStore(db, RealClock()).security_log(50)
    finally:
        await db.close()
