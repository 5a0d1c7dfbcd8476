"""Config of the control loop."""

from __future__ import annotations

from hems.configbase import Strict


class ControlConfig(Strict):
    enabled: bool = False
