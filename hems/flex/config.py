"""Config of the flexibility events and baselines."""

from __future__ import annotations

from hems.configbase import Strict


class FlexConfig(Strict):
    enabled: bool = False
