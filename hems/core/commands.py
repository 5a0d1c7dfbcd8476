"""The owner's commands, validated once: the web page and API (hems.web.actions) and Home
Assistant (hems.app.hacommands) parse a command's fields with these pure functions, so a
value refused on one surface is refused on every other with the same field and reason.

Each function takes the command as a mapping of field → value (a form, a JSON body, or what
the Home Assistant bridge builds from a topic and its payload) and returns the typed request,
or raises HemsError naming the field at fault. The stage then applies the request and may
still refuse it (a battery mode the device does not offer: BadValue from the control loop).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

from hems.core.assets import EvStrategy
from hems.core.capabilities import BatteryMode
from hems.core.localtime import next_local
from hems.errors import HemsError

MAX_OVERRIDE_MINUTES = 24 * 60
EV_MODES: tuple[str, ...] = get_args(EvStrategy)


def field(body: Mapping[str, Any], name: str, kind: type) -> Any:
    """One form/API field, converted, or a HemsError naming it."""
    if name not in body or body[name] in (None, ""):
        raise HemsError(f"{name}: is required")
    value = body[name]
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise HemsError(f"{name}: must be a {kind.__name__}") from None
    if isinstance(converted, float) and not math.isfinite(converted):
        raise HemsError(f"{name}: must be a finite number")
    return converted


def minutes_ahead(body: Mapping[str, Any], now: datetime) -> datetime:
    """The expiry `minutes` (1..1440) after `now`."""
    minutes = field(body, "minutes", float)
    if not 1 <= minutes <= MAX_OVERRIDE_MINUTES:
        raise HemsError(f"minutes: must be 1..{MAX_OVERRIDE_MINUTES}")
    return now + timedelta(minutes=minutes)


def charger(body: Mapping[str, Any], chargers: Collection[str]) -> str:
    charger_id = field(body, "charger_id", str)
    if charger_id not in chargers:
        raise HemsError(f"charger_id: unknown charger {charger_id!r}")
    return str(charger_id)


@dataclass(frozen=True, slots=True)
class EvModeRequest:
    charger_id: str
    mode: EvStrategy | None  # None: back to the configured one
    raw: str  # as asked ("default" for None)


def ev_mode(body: Mapping[str, Any], chargers: Collection[str]) -> EvModeRequest:
    """`{charger_id, mode}`: one of the EvStrategy modes, or `default`."""
    charger_id = charger(body, chargers)
    raw = field(body, "mode", str)
    if raw != "default" and raw not in EV_MODES:
        raise HemsError(f"mode: must be one of {', '.join(EV_MODES)} or default")
    mode: EvStrategy | None = None if raw == "default" else raw
    return EvModeRequest(charger_id, mode, raw)


@dataclass(frozen=True, slots=True)
class EvSessionRequest:
    charger_id: str
    energy_wh: float | None
    departure: datetime
    soc_pct: float | None = None
    target_soc_pct: float | None = None


def departure(raw: str, now: datetime, tz: ZoneInfo) -> datetime:
    """HH:MM local (the next such time) or ISO 8601."""
    try:
        if len(raw) == 5 and raw[2] == ":":
            return next_local(now, raw, tz)
        return datetime.fromisoformat(raw)
    except ValueError as exc:
        raise HemsError(f"departure: not HH:MM or ISO 8601 ({exc})") from None


def ev_session(
    body: Mapping[str, Any], chargers: Collection[str], now: datetime, tz: ZoneInfo
) -> EvSessionRequest:
    """`{charger_id, energy_kwh | (soc_pct, target_soc_pct), departure}`."""
    charger_id = charger(body, chargers)
    soc: float | None = None
    target: float | None = None
    energy_wh: float | None = None
    if body.get("target_soc_pct") not in (None, ""):
        target = field(body, "target_soc_pct", float)
        soc = field(body, "soc_pct", float)
    else:
        energy_wh = field(body, "energy_kwh", float) * 1000
    when = departure(field(body, "departure", str), now, tz)
    return EvSessionRequest(charger_id, energy_wh, when, soc, target)


@dataclass(frozen=True, slots=True)
class BatteryModeRequest:
    device_id: str
    mode: BatteryMode
    expires_at: datetime
    power_w: float


def battery_mode(body: Mapping[str, Any], now: datetime) -> BatteryModeRequest:
    """`{device_id, mode, minutes[, power_w]}`; whether the battery offers the mode is the
    control loop's to say."""
    device_id = field(body, "device_id", str)
    raw = field(body, "mode", str)
    try:
        mode = BatteryMode(raw)
    except ValueError:
        raise HemsError(f"mode: unknown battery mode {raw!r}") from None
    expires = minutes_ahead(body, now)
    power_w = field(body, "power_w", float) if body.get("power_w") not in (None, "") else 0.0
    return BatteryModeRequest(device_id, mode, expires, power_w)


__all__ = [
    "EV_MODES",
    "MAX_OVERRIDE_MINUTES",
    "BatteryModeRequest",
    "EvModeRequest",
    "EvSessionRequest",
    "battery_mode",
    "charger",
    "departure",
    "ev_mode",
    "ev_session",
    "field",
    "minutes_ahead",
]
