"""The site and its hard limits: facts every stage reads, stated once in the config.

`SiteConfig` is where the home is (its id on the aggregator's channel, its time zone and
position for the PV forecast); `LimitsConfig` holds the limits the control loop never
breaches (main fuse, agreed export limit, battery reserve).
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from hems.core.configbase import Strict

_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,3}$")


class SiteConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str = ""
    timezone: str = "Europe/London"
    latitude: float = Field(default=51.5, ge=-90, le=90)
    longitude: float = Field(default=-0.1, ge=-180, le=180)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # IANA names are short paths of letters; anything else never reaches the file system.
        if len(value) > 64 or not _ZONE_NAME.match(value):
            raise ValueError(
                f"unknown time zone {value[:80]!r}: not an IANA name like Europe/London"
            )
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a directory
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class LimitsConfig(Strict):
    """Hard limits the control loop never breaches."""

    fuse_a: float = Field(default=60.0, gt=0, le=400, description="main fuse per phase [A]")
    phases: Literal[1, 3] = 1
    voltage_v: float = Field(default=230.0, gt=0, le=500)
    export_limit_w: float = Field(default=3680.0, ge=0, description="agreed export limit [W]")
    battery_reserve_pct: float = Field(default=10.0, ge=0, le=100)

    @property
    def import_limit_w(self) -> float:
        return self.fuse_a * self.voltage_v * self.phases
