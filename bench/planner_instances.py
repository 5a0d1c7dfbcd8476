"""Random, realistic GB planning instances for the planner benchmark (shared with EMHASS run).

48 h at 15 min from 00:00 UTC: Agile-like half-hourly prices (cheap nights, 16–19 h peak,
some negative slots), PV 0–8 kWp, a 5–15 kWh battery, one EV session (evening to 07:00)
and two deferrable loads. `instance` is the original mix (Agile export = 0.55 × import −
0.01, never above import); `family_instance` varies one thing at a time (`FAMILIES`),
including flat export above Agile import, where the import/export binaries switch on.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from hems.core.plan import Plan
from hems.planning.problem import BatterySpec, DeferrableLoad, EvSession, Problem

START = datetime(2026, 6, 1, tzinfo=UTC)


def agile_like(
    rng: random.Random, n_half_hours: int, windy_p: float = 0.3
) -> tuple[list[float], list[float]]:
    imp, exp = [], []
    windy = [rng.random() < windy_p for _ in range(n_half_hours // 48 + 1)]
    for k in range(n_half_hours):
        h = (k % 48) / 2
        base = 0.16 + 0.05 * math.sin((h - 9) / 24 * 2 * math.pi) + rng.gauss(0, 0.02)
        if 16 <= h < 19:
            base += 0.15 + rng.gauss(0, 0.03)
        if 0 <= h < 6:
            base -= 0.06
        if windy[k // 48] and (1 <= h < 5 or 11 <= h < 15):
            base -= 0.2 + rng.random() * 0.05
        p = round(base, 4)
        imp.append(p)
        exp.append(round(0.55 * p - 0.01 if p > 0 else p, 4))
    return imp, exp


def instance(
    seed: int,
    step_min: int = 15,
    hours: int = 48,
    *,
    flat_export_per_kwh: float | None = None,
    windy_p: float = 0.3,
    ev_and_loads: bool = True,
    import_cap_a: float = 60.0,
    export_cap_w: float = 3680.0,
) -> Problem:
    rng = random.Random(seed)
    n = hours * 60 // step_min
    per_half = 30 // step_min
    imp_hh, exp_hh = agile_like(rng, hours * 2, windy_p)
    if flat_export_per_kwh is not None:
        exp_hh = [flat_export_per_kwh] * len(exp_hh)
    imp = [imp_hh[i // per_half] for i in range(n)]
    exp = [exp_hh[i // per_half] for i in range(n)]
    kwp = rng.uniform(0, 8)
    pv, load = [], []
    for i in range(n):
        h = (i * step_min / 60) % 24
        sun = max(0.0, math.sin((h - 5) / 16 * math.pi)) ** 1.5
        cloud = rng.uniform(0.3, 1.0)
        pv.append(round(kwp * 1000 * 0.8 * sun * cloud, 1))
        peak = 600 * math.exp(-((h - 18.5) ** 2) / 3) + 350 * math.exp(-((h - 7.5) ** 2) / 1.5)
        load.append(round(250 + peak + rng.uniform(0, 150), 1))
    cap_kwh = rng.uniform(5, 15)
    bat = BatterySpec(
        id="battery",
        capacity_wh=round(cap_kwh * 1000),
        initial_soc_pct=rng.uniform(10, 90),
        max_charge_w=round(cap_kwh * 1000 * rng.uniform(0.3, 0.5)),
        max_discharge_w=round(cap_kwh * 1000 * rng.uniform(0.3, 0.5)),
        charge_efficiency=0.95,
        discharge_efficiency=0.95,
        min_soc_pct=10,
        reserve_pct=rng.choice([0, 20]),
        degradation_cost_per_kwh=0.02,
    )
    arrive = START + timedelta(hours=rng.choice([17, 17.5, 18, 18.5, 19]))
    ev = EvSession(
        id="wallbox",
        arrival=arrive,
        departure=START + timedelta(hours=31),
        energy_wh=round(rng.uniform(8, 35)) * 1000,
        min_power_w=6 * 230,
        max_power_w=32 * 230,
        shortfall_penalty_per_kwh=1.0,
    )
    loads = [
        DeferrableLoad(
            id="dishwasher",
            power_w=1800,
            run_time_min=120,
            window_start=START + timedelta(hours=20),
            window_end=START + timedelta(hours=31),
            contiguous=True,
        ),
        DeferrableLoad(
            id="immersion",
            power_w=3000,
            run_time_min=rng.choice([60, 90, 120]),
            window_start=START + timedelta(hours=24),
            window_end=START + timedelta(hours=48),
            min_on_min=30,
        ),
    ]
    return Problem(
        start=START,
        step_min=step_min,
        import_price_per_kwh=imp,
        export_price_per_kwh=exp,
        import_cap_w=import_cap_a * 230,
        export_cap_w=export_cap_w,
        pv_w=pv,
        load_w=load,
        batteries=[bat],
        evs=[ev] if ev_and_loads else [],
        loads=loads if ev_and_loads else [],
    )


# One GB tariff situation per family; each varies the default mix in one or two ways.
FAMILIES: dict[str, dict[str, object]] = {
    "agile/agile": {},
    "agile/flat15": {"flat_export_per_kwh": 0.15},
    "agile/flat15 30min": {"flat_export_per_kwh": 0.15, "step_min": 30},
    "agile/flat15 no EV/loads": {"flat_export_per_kwh": 0.15, "ev_and_loads": False},
    "agile/flat15 tight fuse": {
        "flat_export_per_kwh": 0.15,
        "import_cap_a": 40.0,
        "export_cap_w": 2000.0,
    },
    "negative (windy days)": {"windy_p": 1.0},
    "negative/flat15": {"windy_p": 1.0, "flat_export_per_kwh": 0.15},
    "agile/agile 30min": {"step_min": 30},
    "agile/agile no EV/loads": {"ev_and_loads": False},
    "agile/agile tight fuse": {"import_cap_a": 40.0, "export_cap_w": 2000.0},
}


def family_instance(seed: int, family: str) -> Problem:
    """Instance `seed` of `family` (a key of FAMILIES)."""
    return instance(seed, **FAMILIES[family])  # type: ignore[arg-type]


def after_one_slot(p: Problem, plan: Plan) -> Problem:
    """The next replan's problem: one slot later, the battery where the plan left it after
    slot 0, the EV owed what slot 0 did not deliver, the prices and forecasts shifted (the
    last slot repeated)."""
    # Slot 0's PlanSlots: one, or a split slot's import and export phases.
    first = [s for s in plan.slots if s.end <= p.slot_start(1)]

    def shift(values: list[float]) -> list[float]:
        return values[1:] + values[-1:]

    def delivered_wh(eid: str) -> float:
        return sum(s.targets_w.get(eid, 0.0) * s.duration_s / 3600 for s in first)

    bats = [b.model_copy(update={"initial_soc_pct": first[-1].soc_pct[b.id]}) for b in p.batteries]
    evs = [
        e.model_copy(update={"energy_wh": max(0.0, e.energy_wh - delivered_wh(e.id))})
        for e in p.evs
    ]
    return p.model_copy(
        update={
            "start": p.start + timedelta(minutes=p.step_min),
            "import_price_per_kwh": shift(p.import_price_per_kwh),
            "export_price_per_kwh": shift(p.export_price_per_kwh),
            "pv_w": shift(p.series("pv_w")),
            "load_w": shift(p.series("load_w")),
            "batteries": bats,
            "evs": evs,
        }
    )
