"""The page's and API's state-changing actions: parse the form or JSON body, name the field
at fault, then call the stage. Each action is built from the narrow surface it needs."""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, Protocol, get_args
from zoneinfo import ZoneInfo

from hems.core.assets import EvStrategy
from hems.core.capabilities import BatteryMode
from hems.core.clock import Clock
from hems.core.ev import EvSession
from hems.core.localtime import next_local
from hems.errors import HemsError
from hems.web.server import Action


class Overrides(Protocol):
    def set_override(self, device_id: str, target: float | bool, expires_at: datetime) -> None: ...


class Sessions(Protocol):
    def set_session(
        self,
        device_id: str,
        energy_wh: float | None,
        departure: datetime,
        *,
        soc_pct: float | None = None,
        target_soc_pct: float | None = None,
    ) -> EvSession: ...


class Modes(Protocol):
    def set_mode(self, device_id: str, mode: EvStrategy | None) -> None: ...


class BatteryModes(Protocol):
    def set_battery_mode(
        self, device_id: str, mode: BatteryMode, expires_at: datetime, power_w: float = 0.0
    ) -> None: ...


class Acceptor(Protocol):
    async def pending(self) -> Any: ...

    async def accept(self, identity: str) -> None: ...

    async def reject(self, identity: str) -> None: ...


def override(control: Overrides, clock: Clock) -> Action:
    """`POST /api/override {device_id, target (W, or on/off), minutes}`."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        device_id = field(body, "device_id", str)
        minutes = field(body, "minutes", float)
        if not 1 <= minutes <= 24 * 60:
            raise HemsError("minutes: must be 1..1440")
        raw = body.get("target")
        target: float | bool
        if isinstance(raw, bool) or raw in ("on", "off"):
            target = raw if isinstance(raw, bool) else raw == "on"
        else:
            target = field(body, "target", float)
        expires = clock.now() + timedelta(minutes=minutes)
        control.set_override(device_id, target, expires)
        return {"device_id": device_id, "target": target, "expires_at": expires.isoformat()}

    return act


def ev_session(sessions: Sessions, chargers: Collection[str], clock: Clock, tz: ZoneInfo) -> Action:
    """`POST /api/ev-session {charger_id, energy_kwh | (soc_pct, target_soc_pct), departure
    (HH:MM local or ISO 8601)}`: the energy wanted, or the car's SoC now (read from the car)
    and the SoC wanted, from which the energy is computed with the car's capacity."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        charger_id = field(body, "charger_id", str)
        if charger_id not in chargers:
            raise HemsError(f"charger_id: unknown charger {charger_id!r}")
        soc: float | None = None
        target: float | None = None
        energy_wh: float | None = None
        if body.get("target_soc_pct") not in (None, ""):
            target = field(body, "target_soc_pct", float)
            soc = field(body, "soc_pct", float)
        else:
            energy_wh = field(body, "energy_kwh", float) * 1000
        raw = field(body, "departure", str)
        try:
            if len(raw) == 5 and raw[2] == ":":
                departure = next_local(clock.now(), raw, tz)
            else:
                departure = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise HemsError(f"departure: not HH:MM or ISO 8601 ({exc})") from None
        return sessions.set_session(
            charger_id, energy_wh, departure, soc_pct=soc, target_soc_pct=target
        ).as_dict()

    return act


def ev_mode(sessions: Modes, chargers: Collection[str]) -> Action:
    """`POST /api/ev-mode {charger_id, mode}`: off, pv-only, min-pv, fast (now) or plan (by
    departure); `mode: default` returns to the configured one."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        charger_id = field(body, "charger_id", str)
        if charger_id not in chargers:
            raise HemsError(f"charger_id: unknown charger {charger_id!r}")
        raw = field(body, "mode", str)
        modes = get_args(EvStrategy)
        if raw != "default" and raw not in modes:
            raise HemsError(f"mode: must be one of {', '.join(modes)} or default")
        mode: EvStrategy | None = None if raw == "default" else raw  # type: ignore[assignment]
        sessions.set_mode(charger_id, mode)
        return {"charger_id": charger_id, "mode": raw}

    return act


def battery_mode(control: BatteryModes, clock: Clock) -> Action:
    """`POST /api/battery-mode {device_id, mode, minutes[, power_w]}`: hold a battery in one
    of the modes it offers until the expiry; the safety guard still applies."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        device_id = field(body, "device_id", str)
        raw = field(body, "mode", str)
        try:
            mode = BatteryMode(raw)
        except ValueError:
            raise HemsError(f"mode: unknown battery mode {raw!r}") from None
        minutes = field(body, "minutes", float)
        if not 1 <= minutes <= 24 * 60:
            raise HemsError("minutes: must be 1..1440")
        power_w = field(body, "power_w", float) if body.get("power_w") not in (None, "") else 0.0
        expires = clock.now() + timedelta(minutes=minutes)
        control.set_battery_mode(device_id, mode, expires, power_w)
        return {"device_id": device_id, "mode": str(mode), "expires_at": expires.isoformat()}

    return act


def accept_charger(ocpp: Acceptor) -> Action:
    """`POST /api/accept-charger {identity}`: accept a charger waiting as pending."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        identity = field(body, "identity", str)
        if identity not in await ocpp.pending():
            raise HemsError(f"identity: {identity!r} is not waiting for acceptance")
        await ocpp.accept(identity)
        return {"accepted": identity}

    return act


class OptOut(Protocol):
    async def opt_out(self, event_id: str) -> Any: ...


def flex_opt_out(flex: OptOut) -> Action:
    """`POST /api/flex-opt-out {event_id}`: opt out of an accepted event while the policy
    allows (the aggregator is told)."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        event_id = field(body, "event_id", str)
        await flex.opt_out(event_id)
        return {"event_id": event_id, "status": "opted_out"}

    return act


def reject_charger(ocpp: Acceptor) -> Action:
    """`POST /api/reject-charger {identity}`: refuse a charger waiting as pending."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        identity = field(body, "identity", str)
        if identity not in await ocpp.pending():
            raise HemsError(f"identity: {identity!r} is not waiting for acceptance")
        await ocpp.reject(identity)
        return {"rejected": identity}

    return act


def field(body: dict[str, Any], name: str, kind: type) -> Any:
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
