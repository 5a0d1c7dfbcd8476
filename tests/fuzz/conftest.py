"""Bounded, deterministic fuzzing of every parser that takes input from outside.

`make test` runs each target with a small example count; `make fuzz` sets
HEMS_FUZZ_EXAMPLES (10,000 by default there) for the long runs. Derandomised, so a run is
repeatable and CI cannot flake on a new random seed.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "hems-fuzz",
    max_examples=int(os.environ.get("HEMS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("hems-fuzz")
