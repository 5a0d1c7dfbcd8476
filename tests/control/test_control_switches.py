"""The control loop drives a Shelly load (the simulator, over real HTTP) from the plan: the
plan's slot switches it on, its measured power verifies it, and a failing Shelly is made
safe while the loop keeps running."""

from __future__ import annotations

from control_helpers import T0
from structlog.testing import capture_logs

from hems.control.config import ControlConfig
from hems.control.config import DeviceControlConfig as D
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.clock import ManualClock
from hems.core.plan import Plan, PlanSlot
from hems.core.readings import Quantity, Reading, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.devices.switches.config import ShellyConfig
from hems.devices.switches.service import SwitchService
from hil.switch_sim import ShellySim

LIMITS = LimitsConfig(fuse_a=60, phases=1, export_limit_w=3680, battery_reserve_pct=10)


def plan(on: bool) -> Plan:
    slot = PlanSlot(T0, 3600, 0.1, 0.05, 0, 0, switches={"boiler": on})
    return Plan(T0, (slot,), 0.0, "optimal")


class Rig:
    def __init__(self, port: int, on: bool = True) -> None:
        self.clock = ManualClock(T0)
        self.state = SiteState(self.clock, stale_after_s=10)
        self.state.register_device("grid", Role.GRID)
        entry = ShellyConfig.model_validate(
            {
                "type": "shelly",
                "id": "boiler",
                "host": "127.0.0.1",
                "port": port,
                "timeout_s": 0.5,
                "stale_after_polls": 2,
                "load": {"power_w": 2000},
            }
        )
        self.service = SwitchService([entry], self.state, self.clock)
        self.switch = self.service.switches["boiler"]
        cfg = ControlConfig(
            strategy="self-consumption", verify_after_s=2, verify_failures=2
        ).with_devices({"boiler": D(load_power_w=2000)})
        devices = ControlledDevices.from_adapters(cfg, self.service.devices.values())
        self.plan = plan(on)
        self.loop = ControlLoop(cfg, LIMITS, self.state, devices, self.clock, lambda: self.plan)

    async def cycle(self, grid_w: float = 500.0) -> None:
        await self.clock.advance(1)
        self.state.publish([Reading("grid", Quantity.POWER_W, grid_w, self.clock.now())])
        await self.switch.poll()
        await self.loop.step()

    def device(self) -> dict[str, object]:
        return self.loop.status()["devices"]["boiler"]


async def test_the_plan_switches_a_shelly_on_and_its_measured_power_verifies_it() -> None:
    async with ShellySim({0: 2000.0}) as sim:
        r = Rig(sim.port)
        await r.cycle()
        assert sim.on[0] is True
        for _ in range(4):
            await r.cycle()
        assert r.state.fresh_value("boiler", Quantity.POWER_W) == 2000.0
        st = r.device()
        assert st["verified"] is True and st["ignores_commands"] is False
        # The next plan switches it off again.
        r.plan = plan(False)
        await r.cycle()
        assert sim.on[0] is False
        await r.switch.aclose()


async def test_a_shelly_that_draws_while_told_off_is_flagged_by_its_power() -> None:
    async with ShellySim({0: 2000.0}) as sim:
        r = Rig(sim.port, on=False)
        sim.drawing[0] = 1900.0  # a welded contact: the relay says off, the load draws
        for _ in range(6):
            await r.cycle(grid_w=2400)
        assert sim.on[0] is False
        assert r.device()["ignores_commands"] is True
        await r.switch.aclose()


async def test_a_shelly_answering_500_is_made_safe_and_the_loop_runs_on() -> None:
    async with ShellySim({0: 2000.0}) as sim:
        r = Rig(sim.port)
        await r.cycle()
        assert sim.on[0] is True
        sim.set_fault("http500")
        with capture_logs() as logs:
            for _ in range(4):
                await r.cycle()  # polls fail, the device goes down; the loop keeps cycling
        assert ("shelly device down", "error") in [(e["event"], e["log_level"]) for e in logs]
        assert r.state.is_stale("boiler")
        assert "HTTP 500" in (r.state.down_reason("boiler") or "")
        assert r.loop.status()["cycles"] == 5
        # The stale rule commanded the deferrable load off (the write failed too: a 500).
        stale = [i for i in r.loop.recent_interventions() if i["rule"] == "stale"]
        assert stale and stale[0]["device_id"] == "boiler"
        assert "load stale: off" in str(stale[0]["reason"])
        # The Shelly answers again: fresh readings end the stale rule, the plan applies.
        sim.set_fault(None)
        sim.on[0] = False  # e.g. it rebooted
        await r.cycle()
        assert not r.state.is_stale("boiler")
        for _ in range(10):  # the writer's failure backoff ends
            if sim.on[0]:
                break
            await r.cycle()
        assert sim.on[0] is True
        await r.switch.aclose()
