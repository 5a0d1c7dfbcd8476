"""Config of the aggregator channel."""

from __future__ import annotations

from hems.configbase import Strict


class UplinkConfig(Strict):
    enabled: bool = False
