"""Planner benchmark: hems MILP (highspy) on random realistic GB instances, then EMHASS.

    .venv/bin/python bench/bench_planner.py [--n 100] [--emhass-n 20] [--no-emhass]
    .venv/bin/python bench/bench_planner.py --families [--n 20] [--gap G] [--time-limit S]

`--families`: every tariff family of planner_instances.FAMILIES at the daemon's defaults
(PlannerConfig's `mip_rel_gap` and `time_limit_s`, or --gap / --time-limit), per family the
median, p95 and max solve time, the statuses, and the cost gap against an exact solve of the
same model run here (mip_rel_gap 0, --exact-time-limit, default 120 s; where it is not
proven in time its best plan is the yardstick, and the table says so):
(cost − exact) / |exact|. "replan": the solve one slot later (planner_instances.
after_one_slot), warm-started from the first plan (`optimise(..., warm_start=plan)`).
"CPU": the first solve's process time (one thread; median, p95, max), which a busy machine
inflates less than the wall clock; the time limit is wall clock.

48 h at 15 min (192 slots): Agile-like prices incl. negatives, PV 0–8 kWp, battery 5–15 kWh,
one EV session, two deferrable loads. Prints median and p95 solve time (build + solve +
extract, wall clock, one thread). EMHASS runs in its own venv under /work/bench-envs/emhass,
created here on first use (`pip install emhass`); both plans are scored by the same function.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from planner_instances import FAMILIES, after_one_slot, family_instance, instance  # noqa: E402

from hems.planning.config import PlannerConfig  # noqa: E402
from hems.planning.optimiser import optimise  # noqa: E402
from hems.planning.optimiser.model import (  # noqa: E402
    ModelArrays,
    battery_terminal_value,
    build,
    slot_frame,
)
from hems.planning.optimiser.solve import solve_arrays  # noqa: E402
from hems.planning.optimiser.timeshare import add_min_phase_rows  # noqa: E402
from hems.planning.problem import Problem  # noqa: E402

EMHASS_ENV = Path("/work/bench-envs/emhass")
GAP = 0.005


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


def score(p: Problem, grid_w: list[float], soc_end_pct: float, ev_w: list[float]) -> float:
    """One yardstick for both planners: grid energy cost − value of the SoC change
    (at the terminal value) + EV shortfall penalty. Battery degradation is not counted."""
    f = slot_frame(p)
    dt = f.dt_h
    cost = 0.0
    for t, g in enumerate(grid_w):
        price = f.import_price[t] if g > 0 else f.export_price[t]
        cost += price * g * dt / 1000
    b = p.batteries[0]
    d_soc_wh = (soc_end_pct - b.initial_soc_pct) / 100 * b.capacity_wh
    cost -= battery_terminal_value(b, f) * d_soc_wh / 1000
    ev = p.evs[0]
    delivered = sum(ev_w) * dt
    cost += ev.shortfall_penalty_per_kwh * max(0.0, ev.energy_wh - delivered) / 1000
    return cost


def run_hems(seeds: list[int]) -> dict[int, tuple[float, float, str]]:
    optimise(instance(10_000))  # warm-up: imports, HiGHS banner
    out = {}
    for s in seeds:
        p = instance(s)
        t0 = time.perf_counter()
        r = optimise(p, time_limit_s=10, mip_rel_gap=GAP)
        dt = time.perf_counter() - t0
        grid = [sl.grid_import_w - sl.grid_export_w for sl in r.plan.slots]
        ev = [sl.targets_w["wallbox"] for sl in r.plan.slots]
        soc_end = r.plan.slots[-1].soc_pct["battery"]
        out[s] = (dt, score(p, grid, soc_end, ev), r.plan.status)
    return out


def emhass_payload(s: int, tmp: str) -> dict:
    p = instance(s)
    step = p.step_min

    def idx(t: object) -> int:
        return max(0, min(p.n_slots, round((t - p.start).total_seconds() / 60 / step)))  # type: ignore[operator]

    b, ev = p.batteries[0], p.evs[0]
    floor = min(max(b.min_soc_pct, b.reserve_pct), b.initial_soc_pct) / 100
    return {
        "seed": s,
        "tmp": tmp,
        "start": p.start.isoformat(),
        "n": p.n_slots,
        "step_min": step,
        "mip_rel_gap": GAP,
        "import_price": p.import_price_per_kwh,
        "export_price": p.export_price_per_kwh,
        "pv_w": p.series("pv_w"),
        "load_w": p.series("load_w"),
        "import_cap_w": p.series("import_cap_w")[0],
        "export_cap_w": p.series("export_cap_w")[0],
        "battery": {
            "capacity_wh": b.capacity_wh,
            "max_charge_w": b.max_charge_w,
            "max_discharge_w": b.max_discharge_w,
            "charge_efficiency": b.charge_efficiency,
            "discharge_efficiency": b.discharge_efficiency,
            "floor": floor,
            "soc0": b.initial_soc_pct / 100,
            "degradation_cost_per_kwh": b.degradation_cost_per_kwh,
        },
        "ev": {
            "max_power_w": ev.max_power_w,
            "min_power_w": ev.min_power_w,
            "hours": ev.energy_wh / ev.max_power_w,
            "start": idx(ev.arrival),
            "end": idx(ev.departure),
        },
        "loads": [
            {
                "power_w": d.power_w,
                "hours": d.run_time_min / 60,
                "start": idx(d.window_start),
                "end": idx(d.window_end),
                "contiguous": d.contiguous,
                "min_on_steps": math.ceil(d.min_on_min / step),
            }
            for d in p.loads
        ],
    }


def ensure_emhass() -> str | None:
    """Create the EMHASS venv if needed. Returns None when ready, else the reason."""
    py = EMHASS_ENV / "bin" / "python"
    if not py.exists():
        EMHASS_ENV.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "venv", str(EMHASS_ENV)], capture_output=True)
        if r.returncode:
            return f"venv failed: {r.stderr.decode()[-300:]}"
    r = subprocess.run([str(py), "-c", "import emhass"], capture_output=True)
    if r.returncode:
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "emhass"], capture_output=True, text=True
        )
        if r.returncode:
            return f"pip install emhass failed: {r.stderr.strip()[-400:]}"
    return None


def run_emhass(seeds: list[int]) -> tuple[dict[int, tuple[float, float, str]], list[str]]:
    why = ensure_emhass()
    if why:
        return {}, [why]
    with tempfile.TemporaryDirectory() as tmp:
        payload = [emhass_payload(s, tmp) for s in [10_000, *seeds]]  # first = warm-up
        result_path = Path(tmp) / "emhass.json"
        r = subprocess.run(
            [
                str(EMHASS_ENV / "bin" / "python"),
                str(HERE / "planner_emhass_runner.py"),
                str(result_path),
            ],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if r.returncode:
            return {}, [f"emhass runner exited {r.returncode}: {r.stderr.strip()[-600:]}"]
        rows = json.loads(result_path.read_text())
    out, errors = {}, []
    for row in rows[1:]:
        if "error" in row:
            errors.append(f"seed {row['seed']}: {row['error']}")
            continue
        p = instance(row["seed"])
        grid = [a + b for a, b in zip(row["grid_pos"], row["grid_neg"], strict=True)]
        soc_end = row["soc"][-1] * 100 if row["soc"] else p.batteries[0].initial_soc_pct
        out[row["seed"]] = (row["time_s"], score(p, grid, soc_end, row["ev"]), row["status"])
    return out, errors


def exact_model(p: Problem) -> ModelArrays:
    """The model with the minimum phase of a split slot exact (two binaries per shared
    slot: timeshare.add_min_phase_rows); the whole-slot model where nothing is shared."""
    m, cols, _f = build(p)
    if cols.share is not None:
        add_min_phase_rows(m, cols.share, p.min_phase_s)
    return m


def run_families(
    n: int,
    gap: float,
    time_limit_s: float,
    only: list[str],
    exact_time_limit_s: float,
    whole_slot: bool = False,
) -> int:
    """Per family: solve time at (gap, time limit) and the cost gap to an exact solve.
    `whole_slot`: every slot imports or exports (Problem.time_share false), as before
    time-sharing."""
    optimise(instance(10_000))  # warm-up: imports, HiGHS banner
    print(f"hems planner per tariff family, {n} instances each, mip_rel_gap {gap:g}, "
          f"time limit {time_limit_s:g} s; gap = (cost − exact) / |exact|")  # fmt: skip
    head = f"{'family':26}{'median':>8}{'p95':>8}{'max':>8}{'gap max':>9}{'>0.1%':>6}"
    print(f"{head}{'replan med':>11}{'p95':>8}{'CPU med':>9}{'p95':>8}{'max':>8}  statuses   [ms]")
    worst = 0.0
    for family in FAMILIES:
        if only and family not in only:
            continue
        times, gaps, statuses, replan, cpu = [], [], [], [], []
        n_split, shortest_s, costs = 0, math.inf, []
        unproven = 0
        for s in range(n):
            p = family_instance(s, family)
            if whole_slot:
                p = p.model_copy(update={"time_share": False})
            t0, c0 = time.perf_counter(), time.process_time()
            r = optimise(p, time_limit_s=time_limit_s, mip_rel_gap=gap)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            statuses.append(r.plan.status)
            costs.append(r.objective)
            short = [sl.duration_s for sl in r.plan.slots if sl.duration_s < p.step_s - 1e-6]
            n_split += len(short) // 2
            shortest_s = min([shortest_s, *short])
            nxt = after_one_slot(p, r.plan)  # the replan one slot later, from this plan
            t0 = time.perf_counter()
            optimise(nxt, time_limit_s=time_limit_s, mip_rel_gap=gap, warm_start=r.plan)
            replan.append((time.perf_counter() - t0) * 1000)
            exact = solve_arrays(exact_model(p), exact_time_limit_s, 0.0)
            unproven += exact.status != "optimal"
            gaps.append((r.objective - exact.objective) / max(abs(exact.objective), 1e-9))
        worst = max(worst, max(gaps))
        counts = ", ".join(f"{k} {statuses.count(k)}" for k in sorted(set(statuses)))
        note = f"; exact unproven on {unproven}" if unproven else ""
        print(f"{family:26}{statistics.median(times):8.1f}{pct(times, 0.95):8.1f}"
              f"{max(times):8.1f}{max(gaps):9.3%}{sum(g > 0.001 for g in gaps):6d}"
              f"{statistics.median(replan):11.1f}{pct(replan, 0.95):8.1f}"
              f"{statistics.median(cpu):9.1f}{pct(cpu, 0.95):8.1f}{max(cpu):8.1f}"
              f"  {counts}{note}; split slots {n_split}, shortest phase {shortest_s:.0f} s; "
              f"objective sum {sum(costs):.4f}")  # fmt: skip
    print(f"worst gap to exact: {worst:.3%}")
    return 0


def main() -> int:
    defaults = PlannerConfig()
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="instances for hems (per family)")
    ap.add_argument("--emhass-n", type=int, default=20, help="instances for the comparison")
    ap.add_argument("--no-emhass", action="store_true")
    ap.add_argument("--families", action="store_true", help="every tariff family, vs exact")
    ap.add_argument("--family", action="append", default=[], help="only this family")
    ap.add_argument("--gap", type=float, default=defaults.mip_rel_gap)
    ap.add_argument("--time-limit", type=float, default=defaults.time_limit_s)
    ap.add_argument("--exact-time-limit", type=float, default=120.0, help="[s]")
    ap.add_argument("--whole-slot", action="store_true", help="no time-shared slots")
    args = ap.parse_args()
    if args.families or args.family:
        return run_families(
            args.n, args.gap, args.time_limit, args.family, args.exact_time_limit, args.whole_slot
        )

    seeds = list(range(args.n))
    hems = run_hems(seeds)
    times = [v[0] * 1000 for v in hems.values()]
    statuses = {st for _, _, st in hems.values()}
    print(f"hems planner, {args.n} instances, 192 slots × 15 min, mip_rel_gap {GAP}")
    print(f"{'':28}{'median':>10}{'p95':>10}{'max':>10}")
    print(f"{'solve time [ms]':28}{statistics.median(times):10.1f}{pct(times, 0.95):10.1f}"
          f"{max(times):10.1f}")  # fmt: skip
    print(f"statuses: {sorted(statuses)}")
    if args.no_emhass:
        return 0

    cmp_seeds = seeds[: args.emhass_n]
    em, errors = run_emhass(cmp_seeds)
    for e in errors:
        print(f"EMHASS: {e}")
    both = [s for s in cmp_seeds if s in em]
    if not both:
        return 0
    ht = [hems[s][0] * 1000 for s in both]
    et = [em[s][0] * 1000 for s in both]
    hc = [hems[s][1] for s in both]
    ec = [em[s][1] for s in both]
    print(f"\nside by side, {len(both)} instances (same inputs, same scoring)")
    print(f"{'':28}{'hems':>12}{'EMHASS':>12}")
    print(
        f"{'median solve time [ms]':28}{statistics.median(ht):12.1f}{statistics.median(et):12.1f}"
    )
    print(f"{'p95 solve time [ms]':28}{pct(ht, 0.95):12.1f}{pct(et, 0.95):12.1f}")
    print(f"{'mean cost [GBP/48 h]':28}{statistics.fmean(hc):12.3f}{statistics.fmean(ec):12.3f}")
    lower = sum(h <= e + 1e-6 for h, e in zip(hc, ec, strict=True))
    print(f"hems cost <= EMHASS cost on {lower}/{len(both)} instances; "
          f"speed-up median {statistics.median(et) / statistics.median(ht):.1f}×")  # fmt: skip
    print(f"EMHASS statuses: {sorted({em[s][2] for s in both})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
