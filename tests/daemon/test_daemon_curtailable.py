"""Issue 13, honest capabilities: a SunSpec PV is curtailable only if its unit has a limit
model (123 or 704). The real daemon against the HIL SunSpec server (real pymodbus), once
with the PV's model 123 and once without: without it the PV is measured but not under
control, the export-limit health reason names it, and the uplink does not offer it as
`curtail_pct`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hems.app import Daemon
from hems.app.observability import health_reasons
from hems.config import validate
from hems.core.clock import AcceleratedClock
from hems.core.readings import Quantity
from hems.web.health import HealthReason
from hil.home import HomeConfig
from hil.rig import HilRig
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import free_port, running, wait_until


@pytest.mark.parametrize("has_123", [True, False], ids=["with-123", "without-123"])
async def test_curtailment_comes_from_the_models_found(tmp_path: Path, has_123: bool) -> None:
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig = HilRig(clock, home_config=HomeConfig(pv_inverter_max_w=6000), pv_curtailment=has_123)
    async with rig:
        raw = demo_config(tmp_path, rig.sunspec_port, free_port(), free_port())
        raw["devices"][0]["rated_w"] = 6000  # above the demo's 3680 W export limit
        raw["web"]["enabled"] = False
        daemon = Daemon(validate(raw), clock)
        async with running(daemon):
            await asyncio.wait_for(daemon.started.wait(), 15)
            await wait_until(
                lambda: daemon.state.fresh_value("pv", Quantity.POWER_W) is not None,
                15,
                "PV readings",
            )
            control = daemon.control
            assert control is not None
            assert daemon.layer.devices["pv"].curtailable is has_123
            assert control.controls("pv") is has_123
            assert control.controls("battery")  # the battery is controlled either way
            pv = next(a for a in daemon._capabilities().assets if a.asset_id == "pv")
            export = [r for r in health_reasons(daemon) if r.code.startswith("export_limit")]
            if has_123:
                assert export == []
                assert pv.control == "curtail_pct"
            else:
                assert 123 not in daemon.layer.devices["pv"].sunspec_map.ids
                assert export == [HealthReason("export_limit_battery_only", "pv")]
                assert pv.control == "none" and pv.min_power_w == -6000  # still measured
                assert "pv" not in control.status()["devices"]


async def test_a_pv_silent_at_start_joins_control_once_its_models_are_read(
    tmp_path: Path,
) -> None:
    """The start-up scan gets no answer from the PV's unit: it is measured only (the export
    reason names it) until its unit answers; its first good poll reads model 123 and it
    joins control, and the reason clears."""
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig = HilRig(clock, home_config=HomeConfig(pv_inverter_max_w=6000))
    async with rig:
        assert rig.sunspec_faults is not None
        rig.sunspec_faults.faults.silent_units = {1}  # the PV's unit id in config/demo.yaml
        raw = demo_config(tmp_path, rig.sunspec_port, free_port(), free_port())
        raw["devices"][0]["rated_w"] = 6000
        raw["web"]["enabled"] = False
        daemon = Daemon(validate(raw), clock)
        async with running(daemon):
            await asyncio.wait_for(daemon.started.wait(), 30)
            control = daemon.control
            assert control is not None
            assert daemon.layer.devices["pv"].curtailable is None
            assert not control.controls("pv")
            export = [r for r in health_reasons(daemon) if r.code.startswith("export_limit")]
            assert export == [HealthReason("export_limit_battery_only", "pv")]
            rig.sunspec_faults.faults.silent_units = set()
            await wait_until(lambda: control.controls("pv"), 30, "the PV joining control")
            export = [r for r in health_reasons(daemon) if r.code.startswith("export_limit")]
            assert export == []
            pv = next(a for a in daemon._capabilities().assets if a.asset_id == "pv")
            assert pv.control == "curtail_pct"
