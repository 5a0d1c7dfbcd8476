"""Benchmark of the control loop: cycle time with 30 Modbus devices + 8 chargers, and the
reaction time to a fuse overload.

The devices are in-process fakes of the capability Protocols with realistic async latencies
(Modbus TCP write 5-40 ms, OCPP SetChargingProfile round trip 30-150 ms, seeded), not the HIL
rig: the rig serves one PV inverter, one battery and one meter, not 38 devices.

Run: .venv/bin/python bench/bench_control.py [--cycles 300]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.capabilities import BatteryMode, EvState
from hems.core.clock import ManualClock, RealClock
from hems.core.readings import Quantity as Q
from hems.core.readings import Reading, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState

N_PV, N_BAT, N_LOAD, N_EV = 16, 8, 6, 8  # 30 Modbus devices + 8 OCPP chargers
RNG = random.Random(42)


def _lat(lo_s: float, hi_s: float) -> float:
    return RNG.uniform(lo_s, hi_s)


class Battery:
    def __init__(self, i: int) -> None:
        self.device_id = f"bat{i}"

    @property
    def modes(self) -> frozenset[BatteryMode]:
        return frozenset(BatteryMode)

    async def set_mode(self, mode: BatteryMode, power_w: float = 0.0) -> None:
        await asyncio.sleep(_lat(0.005, 0.040))


class Pv:
    def __init__(self, i: int) -> None:
        self.device_id = f"pv{i}"

    async def power_w(self) -> float:
        return 0.0

    async def set_power_limit_pct(self, limit_pct: float) -> None:
        await asyncio.sleep(_lat(0.005, 0.040))


class Load:
    def __init__(self, i: int) -> None:
        self.device_id = f"load{i}"

    async def set_on(self, on: bool) -> None:
        await asyncio.sleep(_lat(0.005, 0.040))

    async def is_on(self) -> bool:
        return False


class Charger:
    expected_response_delay_s = 0.0

    def __init__(self, i: int) -> None:
        self.device_id = f"ev{i}"
        self.writes: list[tuple[float, float]] = []  # (perf_counter, current_a)

    async def state(self) -> EvState:
        return EvState.CHARGING  # the OCPP adapter answers from its cached status

    async def power_w(self) -> float:
        return 0.0

    async def session_energy_wh(self) -> float:
        return 0.0

    async def set_limit(self, current_a: float, phases: int, dsr: bool = False) -> None:
        await asyncio.sleep(_lat(0.030, 0.150))
        self.writes.append((time.perf_counter(), current_a))


def build(clock, cfg: ControlConfig):  # type: ignore[no-untyped-def]
    state = SiteState(clock, stale_after_s=30)
    devs = ControlledDevices()
    chargers = []
    state.register_device("grid", Role.GRID)
    for i in range(N_PV):
        devs.add_pv(Pv(i), rated_w=5000, phase=None)
        state.register_device(f"pv{i}", Role.PV)
    for i in range(N_BAT):
        devs.add_battery(Battery(i), max_charge_w=5000, max_discharge_w=5000)
        state.register_device(f"bat{i}", Role.BATTERY)
    for i in range(N_LOAD):
        devs.add_load(Load(i), power_w=2000, phase=i % 3 + 1)
        state.register_device(f"load{i}", Role.LOAD)
    for i in range(N_EV):
        c = Charger(i)
        chargers.append(c)
        devs.add_charger(c, min_current_a=6, max_current_a=32, phases=(1, 3), phase=i % 3 + 1)
        state.register_device(f"ev{i}", Role.EV)
    # A small commercial site: 3 x 400 A so 8 chargers at 32 A fit normally.
    limits = LimitsConfig(
        fuse_a=400, phases=3, voltage_v=230, export_limit_w=100000, battery_reserve_pct=10
    )
    loop = ControlLoop(cfg, limits, state, devs, clock, lambda: None)
    return state, loop, chargers


def publish(state: SiteState, now: datetime, grid_w: float, wobble: float) -> None:
    rs = [Reading("grid", Q.POWER_W, grid_w, now)]
    rs += [Reading("grid", q, grid_w / 3, now) for q in (Q.POWER_L1_W, Q.POWER_L2_W, Q.POWER_L3_W)]
    for i in range(N_PV):
        rs.append(Reading(f"pv{i}", Q.POWER_W, 3000 + wobble, now))
    for i in range(N_BAT):
        rs += [
            Reading(f"bat{i}", Q.POWER_W, 1000 + wobble, now),
            Reading(f"bat{i}", Q.SOC_PCT, 50, now),
        ]
    for i in range(N_LOAD):
        rs.append(Reading(f"load{i}", Q.POWER_W, 0, now))
    for i in range(N_EV):
        rs.append(Reading(f"ev{i}", Q.POWER_W, 22000, now))
    state.publish(rs)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def bench_cycles(n: int, changing: bool, cpu: list[float] | None = None) -> list[float]:
    clock = ManualClock(datetime(2026, 6, 21, 12, tzinfo=UTC))
    cfg = ControlConfig(strategy="self-consumption", ev_strategy="fast")
    state, loop, _ = build(clock, cfg)
    times = []
    for k in range(n):
        await clock.advance(1.0)
        # changing: every battery setpoint moves beyond the deadband each cycle (worst case)
        wobble = (k % 2) * 800.0 if changing else 0.0
        publish(state, clock.now(), 2000 + wobble, 0.0)
        t0 = time.perf_counter()
        await loop.step()
        times.append((time.perf_counter() - t0) * 1000)
        if cpu is not None:
            stages = loop.status()["stage_ms"]
            cpu.append(stages["snapshot"] + stages["compute"])
    await loop._shutdown()
    return times


async def bench_reaction(trials: int) -> list[float]:
    """Wall time from an overload reading arriving to the first EV reduction acknowledged."""
    clock = RealClock()
    cfg = ControlConfig(strategy="self-consumption", ev_strategy="fast", cycle_s=1.0)
    state, loop, chargers = build(clock, cfg)
    out: list[float] = []
    task = asyncio.create_task(loop.run())
    try:
        for _ in range(trials):
            publish(state, clock.now(), 100000, 0.0)
            await asyncio.sleep(2.0)  # settle at full current
            await asyncio.sleep(RNG.uniform(0.0, 1.0))  # overload lands anywhere in a cycle
            t0 = time.perf_counter()
            # +200 kW on a 3 x 400 A site with 8 x 22 kW chargers running: shed needed
            publish(state, clock.now(), 100000 + 250000, 0.0)
            while True:
                await asyncio.sleep(0.005)
                done = [t for c in chargers for t, a in c.writes if t > t0 and a < 32]
                if done:
                    out.append((min(done) - t0) * 1000)
                    break
            publish(state, clock.now(), 100000, 0.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return out


async def bench_rig(seconds: float, trials: int) -> tuple[list[float], list[float], list[float]]:
    """The same over real protocols: 10 HIL SunSpec servers (PV, battery, meter each: 30
    Modbus TCP units) polled by hems' SunSpec adapters, and 8 HIL OCPP 1.6 charge points on
    hems' central system, all on 127.0.0.1. The site is home 0 (3 x 160 A); each charger's
    draw is a load in it. Returns (cycle ms, snapshot+compute ms, fuse reaction ms)."""
    from hems.devices.modbus.config import SunSpecDeviceConfig
    from hems.devices.modbus.engine import EndpointPool
    from hems.devices.modbus.sunspec_device import sunspec_device
    from hems.devices.ocpp.config import ChargerConfig, OcppConfig
    from hems.devices.ocpp.server import OcppCentralSystem
    from hil.chargepoint import SimChargePoint, SimConfig
    from hil.ev import EvModel
    from hil.home import Home, HomeConfig
    from hil.sunspec_server import SunSpecServer

    clock = RealClock()
    start = datetime(2026, 6, 21, 11, tzinfo=UTC)
    homes = [
        Home(HomeConfig(seed=i, phases=3, fuse_a=160, battery_initial_soc_pct=50), start=start)
        for i in range(10)
    ]
    servers = [SunSpecServer(h, clock) for h in homes]
    for srv in servers:
        await srv.start()
    state = SiteState(clock)
    pool = EndpointPool()
    adapters = []
    for i, srv in enumerate(servers):
        for dev, role, unit in (
            (f"pv{i}", "pv", 1),
            (f"bat{i}", "battery", 2),
            (f"m{i}", "grid", 3),
        ):
            adapters.append(
                sunspec_device(
                    SunSpecDeviceConfig(
                        type="sunspec",
                        id=dev,
                        role=role,
                        host="127.0.0.1",
                        port=srv.port,
                        unit_id=unit,
                        timeout_s=0.5,
                        poll_interval_s=1.0,
                    ),
                    pool,
                    state,
                    clock,
                )
            )
    password = "bench-password-0123"
    ocpp_cfg = OcppConfig.model_validate(
        {
            "enabled": True,
            "host": "127.0.0.1",
            "meter_value_sample_interval_s": 1,
        }
    ).model_copy(update={"port": 0})
    ocpp_cfg = ocpp_cfg.with_chargers(
        [
            ChargerConfig.model_validate(
                {
                    "id": f"ev{i}",
                    "identity": f"CP{i}",
                    "password": password,
                    "max_current_a": 16,
                    "randomised_delay_max_s": 0,
                }
            )
            for i in range(N_EV)
        ]
    )
    cs = OcppCentralSystem(ocpp_cfg, state, clock)
    tasks = [asyncio.create_task(a.run()) for a in adapters]
    tasks.append(asyncio.create_task(cs.run()))
    await asyncio.wait_for(cs.started.wait(), 5)
    sims = []
    for i in range(N_EV):
        sim = SimChargePoint(
            SimConfig(
                url=f"ws://127.0.0.1:{cs.port}",
                identity=f"CP{i}",
                password=password,
                phases=3,
                max_current_a=16,
                meter_interval_s=1.0,
                seed=i,
            ),
            clock,
            ev=EvModel(battery_kwh=60, soc_pct=30, max_ac_power_w=11000, phases=3),
            on_power=lambda w, i=i: homes[0].set_external_load_w(f"ev{i}", w),
        )
        sims.append(sim)
        tasks.append(asyncio.create_task(sim.run()))

    async def physics() -> None:
        last = clock.monotonic()
        while True:
            await asyncio.sleep(0.1)
            now_s = clock.monotonic()
            for h, srv in zip(homes, servers, strict=True):
                h.step(clock.now(), now_s - last)
                srv.refresh()
            last = now_s

    tasks.append(asyncio.create_task(physics()))
    devs = ControlledDevices()
    for i in range(10):
        devs.add_pv(cs_pv := next(a for a in adapters if a.device_id == f"pv{i}"), rated_w=3680)
        devs.add_battery(
            next(a for a in adapters if a.device_id == f"bat{i}"),
            max_charge_w=5000,
            max_discharge_w=5000,
        )
        _ = cs_pv
    for i in range(N_EV):
        devs.add_charger(cs.charger(f"ev{i}"), min_current_a=6, max_current_a=16, phases=(3,))
    limits = LimitsConfig(
        fuse_a=160, phases=3, voltage_v=230, export_limit_w=100000, battery_reserve_pct=10
    )
    cfg = ControlConfig(
        strategy="self-consumption", ev_strategy="fast", cycle_s=1.0, grid_meter_id="m0"
    )
    loop = ControlLoop(cfg, limits, state, devs, clock, lambda: None)
    cycles: list[float] = []
    cpu: list[float] = []
    reactions: list[float] = []
    loop_task = asyncio.create_task(loop.run())
    try:
        await asyncio.sleep(5.0)  # connect, boot, first transactions
        n0 = loop.status()["cycles"]
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            await asyncio.sleep(0.05)
            st = loop.status()
            if st["cycles"] > n0:
                n0 = st["cycles"]
                cycles.append(st["last_cycle_ms"])
                cpu.append(st["stage_ms"]["snapshot"] + st["stage_ms"]["compute"])
        for _ in range(trials):
            await asyncio.sleep(RNG.uniform(3.0, 4.0))  # settle, land anywhere in a cycle
            t0 = time.perf_counter()
            homes[0].step_load(60_000, 6)  # 8 x 11 kW + 60 kW > 3 x 160 A
            seen_over = False
            while time.perf_counter() - t0 < 10:
                await asyncio.sleep(0.01)
                over = homes[0].state.over_current
                seen_over = seen_over or over
                if seen_over and not over:  # the physics is back under the fuse
                    reactions.append((time.perf_counter() - t0) * 1000)
                    break
            await asyncio.sleep(6.0)
    finally:
        for t in [loop_task, *tasks]:
            t.cancel()
        for sim in sims:
            sim.stop()
        await asyncio.gather(loop_task, *tasks, return_exceptions=True)
        await pool.close()
        for srv in servers:
            await srv.stop()
    return cycles, cpu, reactions


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--rig", action="store_true", help="also run over real Modbus/OCPP (HIL)")
    ap.add_argument("--rig-seconds", type=float, default=60.0)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    import logging

    logging.disable(logging.CRITICAL)  # pymodbus / websockets chatter
    steady = await bench_cycles(args.cycles, changing=False)
    cpu: list[float] = []
    busy = await bench_cycles(args.cycles, changing=True, cpu=cpu)
    reaction = await bench_reaction(args.trials)
    print(
        f"hems control loop: {N_PV + N_BAT + N_LOAD} Modbus devices + {N_EV} chargers "
        "(fake capability objects with Modbus 5-40 ms / OCPP 30-150 ms async latencies)"
    )
    print(f"{'case':<44}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, vals in (
        ("cycle, steady (refreshes only)", steady),
        ("cycle, every battery setpoint changes", busy),
        ("  of which snapshot + strategies + guard", cpu),
        ("fuse overload -> EV limit acknowledged", reaction),
    ):
        print(
            f"{name:<44}{len(vals):>6}{statistics.median(vals):>10.1f}{pct(vals, 99):>10.1f}"
            f"{max(vals):>10.1f}"
        )
    if args.rig:
        cyc, rig_cpu, rig_react = await bench_rig(args.rig_seconds, args.trials)
        print()
        print(
            "over real protocols (HIL): 10 SunSpec servers = 30 Modbus TCP units, "
            f"{N_EV} OCPP 1.6 charge points, 1 s cycle"
        )
        print(f"{'case':<44}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for name, vals in (
            ("cycle (20 Modbus + 8 OCPP controlled)", cyc),
            ("  of which snapshot + strategies + guard", rig_cpu),
            ("60 kW step -> site back under its fuse", rig_react),
        ):
            if not vals:
                print(f"{name:<44}{0:>6}  (no samples)")
                continue
            print(
                f"{name:<44}{len(vals):>6}{statistics.median(vals):>10.1f}"
                f"{pct(vals, 99):>10.1f}{max(vals):>10.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
