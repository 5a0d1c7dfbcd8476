"""Monitoring the real daemon on the HIL rig (demo config, every stage on): the public
health endpoint tells the truth when the grid meter dies and comes back, and /metrics
(Prometheus, behind the login guard) carries the live site and the stages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog.testing
from prometheus_client.parser import text_string_to_metric_families

from hems.app import Daemon
from hems.app.observability import health_reasons, log_guarantees
from hems.config import validate
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.capabilities import BatteryMode
from hems.core.clock import AcceleratedClock, ManualClock, RealClock
from hems.core.readings import Quantity, Reading, Role
from hems.store.db import Database
from hems.web.auth import AuthStore
from hems.web.health import HealthReason
from hil.faults import ExceptionRule
from hil.rig import HilRig
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import free_port, rig_with_car, running, wait_until, web_credentials

GRID_UNIT_ID = 3  # config/demo.yaml: the grid meter is unit 3 on the SunSpec server


async def health(base: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base) as anon:  # no credentials: it is public
        return await anon.get("/api/v1/health")


async def test_health_is_503_while_the_grid_meter_is_dead_and_200_once_it_is_back(
    tmp_path: Path,
) -> None:
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig = HilRig(clock)  # with the Modbus fault proxy in front of the SunSpec server
    web_port = free_port()
    async with rig:
        assert rig.sunspec_faults is not None
        cfg = validate(demo_config(tmp_path, rig.sunspec_port, free_port(), web_port))
        await web_credentials(cfg.storage.path)
        daemon = Daemon(cfg, clock)
        base = f"http://127.0.0.1:{web_port}"
        async with running(daemon):
            await asyncio.wait_for(daemon.started.wait(), 15)

            async def status_is(code: int) -> httpx.Response | None:
                r = await health(base)
                return r if r.status_code == code else None

            ok = await wait_until(lambda: status_is(200), 30, "healthy with every device up")
            assert ok.json()["ok"] is True and ok.json()["reasons"] == []

            # The meter answers every request with a Modbus exception: no grid readings.
            rig.sunspec_faults.faults.exceptions.append(
                ExceptionRule(0, 0x10000, unit_id=GRID_UNIT_ID)
            )
            dead = await wait_until(lambda: status_is(503), 30, "503 once the meter is stale")
            body = dead.json()
            assert body["ok"] is False
            assert {"code": "grid_meter_stale", "detail": "grid"} in body["reasons"]
            # Public: codes and device ids only, nothing else.
            assert set(body) == {"ok", "reasons", "stale_devices", "stage_failures"}
            assert all(set(r) == {"code", "detail"} for r in body["reasons"])
            async with httpx.AsyncClient(base_url=base) as anon:
                legacy = await anon.get("/api/health")
            assert legacy.status_code == 503 and legacy.json()["reasons"] == body["reasons"]

            rig.sunspec_faults.faults.exceptions.clear()
            back = await wait_until(lambda: status_is(200), 30, "200 once the meter is back")
            assert back.json()["ok"] is True and back.json()["reasons"] == []


def families(text: str) -> dict[str, list[tuple[dict[str, str], float, str]]]:
    """name -> [(labels, value, sample name)] of a scrape."""
    out: dict[str, list[tuple[dict[str, str], float, str]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = [(s.labels, s.value, s.name) for s in family.samples]
    return out


async def read_only_token(db_path: Path) -> str:
    """What `hems admin token create prometheus --read-only` makes."""
    db = await Database.open(db_path)
    try:
        return await AuthStore(db, RealClock()).create_token("prometheus", can_write=False)
    finally:
        await db.close()


async def test_metrics_scrape_of_the_real_daemon(tmp_path: Path) -> None:
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig, _car, ocpp_port, web_port = rig_with_car(clock)
    async with rig:
        cfg = validate(demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port))
        await web_credentials(cfg.storage.path)
        token = await read_only_token(cfg.storage.path)
        daemon = Daemon(cfg, clock)
        base = f"http://127.0.0.1:{web_port}"
        async with running(daemon):
            await asyncio.wait_for(daemon.started.wait(), 15)
            async with httpx.AsyncClient(base_url=base) as anon:
                r = await anon.get("/metrics")
                assert r.status_code == 401
                r = await anon.get("/metrics", headers={"Authorization": "Bearer wrong"})
                assert r.status_code == 401
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {token}"}
            ) as client:

                async def ready() -> dict[str, list[tuple[dict[str, str], float, str]]] | None:
                    r = await client.get("/metrics")
                    assert r.status_code == 200, r.text
                    assert r.headers["content-type"].startswith("text/plain; version=")
                    f = families(r.text)
                    wanted = ("hems_grid_power_watts", "hems_planner_last_solve_status")
                    ocpp = f.get("hems_ocpp_connections", [({}, 0.0, "")])[0][1]
                    return f if all(w in f for w in wanted) and ocpp == 1 else None

                f = await wait_until(ready, 60, "grid, planner and charger in the scrape")
                # Site figures from SITE_QUANTITIES, equal to /api/state's summary (compared
                # while the summary holds still around the scrape).
                for _ in range(50):
                    before = (await client.get("/api/state")).json()["summary"]
                    scraped = families((await client.get("/metrics")).text)
                    after = (await client.get("/api/state")).json()["summary"]
                    if before == after:
                        break
                else:
                    raise AssertionError("the site summary never held still for one scrape")
                f = scraped
                assert f["hems_grid_power_watts"][0][1] == after["grid_power_w"]
                assert f["hems_pv_power_watts"][0][1] == after["pv_power_w"]
                assert f["hems_battery_power_watts"][0][1] == after["battery_power_w"]
                assert f["hems_load_power_watts"][0][1] == after["load_power_w"]
                assert f["hems_battery_soc_percent"][0][1] == after["battery_soc_pct"]
                assert 0 <= f["hems_battery_soc_percent"][0][1] <= 100
                assert f["hems_pv_power_watts"][0][1] > 0  # noon in June
                energy = f.get("hems_grid_import_energy_kwh")
                if after["grid_import_energy_kwh"] is not None:
                    assert energy is not None and energy[0][2].endswith("_total")
                    assert energy[0][1] == after["grid_import_energy_kwh"]
                # Devices, one gauge each.
                up = {labels["device"]: (labels["role"], v) for labels, v, _ in f["hems_device_up"]}
                assert up == {
                    "pv": ("pv", 1.0),
                    "battery": ("battery", 1.0),
                    "grid": ("grid", 1.0),
                    "wallbox": ("ev", 1.0),
                }
                # Control: healthy, every cycle in the histogram, well inside the period.
                assert f["hems_control_healthy"][0][1] == 1.0
                cycle = {s: (labels, v) for labels, v, s in f["hems_control_cycle_seconds"]}
                count = cycle["hems_control_cycle_seconds_count"][1]
                assert count >= 1
                buckets = [
                    (labels["le"], v)
                    for labels, v, s in f["hems_control_cycle_seconds"]
                    if s.endswith("_bucket")
                ]
                assert buckets[-1] == ("+Inf", count)
                assert 0 < cycle["hems_control_cycle_seconds_sum"][1] < count * 1.0
                assert "hems_control_interventions" in f
                # OCPP and the planner.
                assert f["hems_ocpp_connections"][0][1] == 1
                ((status_labels, status_value, _),) = f["hems_planner_last_solve_status"]
                assert status_labels == {"status": "optimal"} and status_value == 1
                solved_at = f["hems_planner_last_solve_timestamp_seconds"][0][1]
                assert solved_at <= clock.now().timestamp()
                assert 0 < f["hems_planner_last_solve_duration_seconds"][0][1] < 10
                # No uplink in the demo config: its figures are absent, not zero.
                assert "hems_uplink_connected" not in f
                assert "hems_uplink_outbox_depth" not in f


async def test_health_reasons_of_the_control_loop(tmp_path: Path) -> None:
    """The stage reasons on a real control loop with nothing it can command: unhealthy until
    its first cycle, and the export limit unenforceable while PV of unknown size exists."""
    clock = ManualClock(datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    cfg = validate(demo_config(tmp_path, free_port(), free_port(), free_port()))
    daemon = Daemon(cfg, clock)
    assert health_reasons(daemon) == []  # no control loop: nothing to enforce
    daemon.state.register_device("roof", Role.PV)  # not in devices[]: its size is unknown
    control = ControlLoop(
        cfg.control_config(), cfg.limits, daemon.state, ControlledDevices(), clock, lambda: None
    )
    daemon.control = control
    unenforceable = HealthReason("export_limit_unenforceable", "roof")
    assert health_reasons(daemon) == [
        HealthReason("control_unhealthy", "control"),
        HealthReason("no_grid_meter", "control"),
        unenforceable,
    ]
    daemon.state.register_device("grid", Role.GRID)
    await control.step()
    assert control.healthy
    assert health_reasons(daemon) == [unenforceable]


class _Battery:
    """A controllable battery as the registry sees it: health asks only what is controlled
    (the loop's one cycle here may command it; nothing listens)."""

    device_id = "battery"
    modes = frozenset({BatteryMode.NORMAL, BatteryMode.IDLE})

    async def set_mode(self, mode: BatteryMode, power_w: float = 0.0) -> None:
        return None


async def test_guarantee_reasons_follow_the_devices_configured(tmp_path: Path) -> None:
    """Issue 13: hems says when the export limit or a per-phase fuse cannot be guaranteed."""
    clock = ManualClock(datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    raw = demo_config(tmp_path, free_port(), free_port(), free_port())
    raw["devices"][0]["rated_w"] = 6000  # the demo's PV (uncurtailable here) above 3680 W
    raw["limits"]["phases"] = 3
    cfg = validate(raw)
    daemon = Daemon(cfg, clock)
    for dev_id, role in (("pv", Role.PV), ("battery", Role.BATTERY), ("grid", Role.GRID)):
        daemon.state.register_device(dev_id, role)
    daemon.state.publish([Reading("grid", Quantity.POWER_W, 500.0, clock.now())])
    devices = ControlledDevices()
    devices.add_battery(_Battery(), max_charge_w=5000, max_discharge_w=5000)
    daemon.control = ControlLoop(
        cfg.control_config(), cfg.limits, daemon.state, devices, clock, lambda: None
    )
    await daemon.control.step()
    assert health_reasons(daemon) == [
        HealthReason("export_limit_battery_only", "pv"),
        HealthReason("fuse_phases_unmeasured", "grid"),
    ]
    with structlog.testing.capture_logs() as logs:
        log_guarantees(daemon)  # what the daemon logs at start
    assert [(e["event"], e["code"], e["pv"]) for e in logs] == [
        ("export limit not guaranteed by the devices configured", "export_limit_battery_only", "pv")
    ]
    # Per-phase currents from the meter: the fuse is guarded on measurements again.
    daemon.state.publish(
        [Reading("grid", q, 3.0, clock.now()) for q in (Quantity.CURRENT_L1_A,
         Quantity.CURRENT_L2_A, Quantity.CURRENT_L3_A)]
    )  # fmt: skip
    assert health_reasons(daemon) == [HealthReason("export_limit_battery_only", "pv")]
    await clock.advance(120)  # the currents go stale; per-phase powers do as well
    daemon.state.publish(
        [Reading("grid", Quantity.POWER_W, 500.0, clock.now())]
        + [Reading("grid", q, 200.0, clock.now()) for q in (Quantity.POWER_L1_W,
           Quantity.POWER_L2_W, Quantity.POWER_L3_W)]
    )  # fmt: skip
    assert health_reasons(daemon) == [HealthReason("export_limit_battery_only", "pv")]
    # Uncurtailable PV that cannot pass the limit even at full power needs no notice.
    raw["devices"][0]["rated_w"] = 3000
    daemon.cfg = validate(raw)
    assert health_reasons(daemon) == []
