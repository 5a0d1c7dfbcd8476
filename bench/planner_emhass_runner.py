"""Runs inside /work/bench-envs/emhass (NOT the hems venv): solve bench instances with EMHASS.

Reads a JSON list of instances on stdin (written by bench_planner.py) and writes, to the
file named by argv[1], the solve time and schedule of each. Only
`Optimization.perform_optimization` is timed (EMHASS builds its CVXPY problem inside that
call; the constructor is not timed).
"""

import asyncio
import json
import logging
import pathlib
import sys
import time

import numpy as np
import pandas as pd
from emhass import utils
from emhass.optimization import Optimization


def configure(inst, root):
    emhass_conf = {
        "root_path": root,
        "data_path": pathlib.Path(inst["tmp"]),
        "defaults_path": root / "data" / "config_defaults.json",
        "associations_path": root / "data" / "associations.csv",
    }
    logger = logging.getLogger("emhass-bench")
    logger.setLevel(logging.ERROR)
    config = asyncio.run(utils.build_config(emhass_conf, logger, str(emhass_conf["defaults_path"])))
    b, ev, loads = inst["battery"], inst["ev"], inst["loads"]
    config.update(
        {
            "optimization_time_step": inst["step_min"],
            "delta_forecast_daily": inst["n"] * inst["step_min"] / 1440,
            "costfun": "profit",
            "set_use_pv": False,
            "compute_curtailment": True,
            "lp_solver_mip_rel_gap": inst["mip_rel_gap"],
            "lp_solver_timeout": 45,
            "num_threads": 1,
            "maximum_power_from_grid": inst["import_cap_w"],
            "maximum_power_to_grid": inst["export_cap_w"],
            "set_nodischarge_to_grid": False,
            "set_use_battery": True,
            "battery_nominal_energy_capacity": b["capacity_wh"],
            "battery_charge_power_max": b["max_charge_w"],
            "battery_discharge_power_max": b["max_discharge_w"],
            "battery_charge_efficiency": b["charge_efficiency"],
            "battery_discharge_efficiency": b["discharge_efficiency"],
            "battery_minimum_state_of_charge": b["floor"],
            "battery_maximum_state_of_charge": 1.0,
            "battery_target_state_of_charge": b["soc0"],
            "weight_battery_discharge": b["degradation_cost_per_kwh"],
            "number_of_deferrable_loads": 3,
            "nominal_power_of_deferrable_loads": [ev["max_power_w"]]
            + [d["power_w"] for d in loads],
            "minimum_power_of_deferrable_loads": [ev["min_power_w"], 0.0, 0.0],
            "cost_forecast_per_deferrable_load": [None, None, None],
            "is_electric_load": [True, True, True],
            "operating_hours_of_each_deferrable_load": [ev["hours"]] + [d["hours"] for d in loads],
            "start_timesteps_of_each_deferrable_load": [ev["start"]] + [d["start"] for d in loads],
            "end_timesteps_of_each_deferrable_load": [ev["end"]] + [d["end"] for d in loads],
            "treat_deferrable_load_as_semi_cont": [False, True, True],
            "set_deferrable_load_single_constant": [False] + [d["contiguous"] for d in loads],
            "set_deferrable_startup_penalty": [0.0, 0.0, 0.0],
            "deferrable_load_max_cost": [0.0, 0.0, 0.0],
            "set_deferrable_max_startups": [0, 0, 0],
            "def_minimum_on_time": [0] + [d["min_on_steps"] for d in loads],
            "def_minimum_off_time": [0, 0, 0],
        }
    )
    params = asyncio.run(utils.build_params(emhass_conf, {}, config, logger))
    rh, oc, pc = utils.get_yaml_parse(json.dumps(params, default=str), logger)
    return emhass_conf, logger, rh, oc, pc


def column(res, key):
    return [float(v) for v in res[key].fillna(0).to_numpy()] if key in res else None


def main():
    root = pathlib.Path(utils.__file__).parent
    out = []
    for inst in json.load(sys.stdin):
        try:
            emhass_conf, logger, rh, oc, pc = configure(inst, root)
            n = inst["n"]
            idx = pd.date_range(inst["start"], periods=n, freq=f"{inst['step_min']}min", tz="UTC")
            data = pd.DataFrame(
                {"unit_load_cost": inst["import_price"], "unit_prod_price": inst["export_price"]},
                index=idx,
            )
            opt = Optimization(
                rh,
                oc,
                pc,
                "unit_load_cost",
                "unit_prod_price",
                "profit",
                emhass_conf,
                logger,
                num_timesteps=n,
            )
            t0 = time.perf_counter()
            res = opt.perform_optimization(
                data,
                np.array(inst["pv_w"]),
                np.array(inst["load_w"]),
                np.array(inst["import_price"]),
                np.array(inst["export_price"]),
                soc_init=inst["battery"]["soc0"],
                soc_final=inst["battery"]["soc0"],
            )
            dt = time.perf_counter() - t0
            out.append(
                {
                    "seed": inst["seed"],
                    "time_s": dt,
                    "status": str(res["optim_status"].iloc[0]),
                    "grid_pos": column(res, "P_grid_pos"),
                    "grid_neg": column(res, "P_grid_neg"),
                    "batt": column(res, "P_batt"),
                    "soc": column(res, "SOC_opt"),
                    "ev": column(res, "P_deferrable0"),
                    "d1": column(res, "P_deferrable1"),
                    "d2": column(res, "P_deferrable2"),
                }
            )
        except Exception as exc:  # report exactly why, per instance
            out.append({"seed": inst["seed"], "error": f"{type(exc).__name__}: {exc}"})
    with open(sys.argv[1], "w") as fh:  # stdout carries solver banners
        json.dump(out, fh)


if __name__ == "__main__":
    main()
