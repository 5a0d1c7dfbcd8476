"""Config of the OCPP central system."""

from __future__ import annotations

from hems.configbase import Strict


class OcppConfig(Strict):
    enabled: bool = False
