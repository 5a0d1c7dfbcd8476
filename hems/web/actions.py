"""The page's and API's state-changing actions: parse the form or JSON body, name the field
at fault, then call the stage. Each action is built from the narrow surface it needs."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from hems.core import commands
from hems.core.assets import EvStrategy
from hems.core.capabilities import BatteryMode
from hems.core.clock import Clock
from hems.core.commands import field
from hems.core.ev import EvSession
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
        expires = commands.minutes_ahead(body, clock.now())
        raw = body.get("target")
        target: float | bool
        if isinstance(raw, bool) or raw in ("on", "off"):
            target = raw if isinstance(raw, bool) else raw == "on"
        else:
            target = field(body, "target", float)
        control.set_override(device_id, target, expires)
        return {"device_id": device_id, "target": target, "expires_at": expires.isoformat()}

    return act


def ev_session(sessions: Sessions, chargers: Collection[str], clock: Clock, tz: ZoneInfo) -> Action:
    """`POST /api/ev-session {charger_id, energy_kwh | (soc_pct, target_soc_pct), departure
    (HH:MM local or ISO 8601)}`: the energy wanted, or the car's SoC now (read from the car)
    and the SoC wanted, from which the energy is computed with the car's capacity."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        r = commands.ev_session(body, chargers, clock.now(), tz)
        return sessions.set_session(
            r.charger_id,
            r.energy_wh,
            r.departure,
            soc_pct=r.soc_pct,
            target_soc_pct=r.target_soc_pct,
        ).as_dict()

    return act


def ev_mode(sessions: Modes, chargers: Collection[str]) -> Action:
    """`POST /api/ev-mode {charger_id, mode}`: off, pv-only, min-pv, fast (now) or plan (by
    departure); `mode: default` returns to the configured one."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        r = commands.ev_mode(body, chargers)
        sessions.set_mode(r.charger_id, r.mode)
        return {"charger_id": r.charger_id, "mode": r.raw}

    return act


def battery_mode(control: BatteryModes, clock: Clock) -> Action:
    """`POST /api/battery-mode {device_id, mode, minutes[, power_w]}`: hold a battery in one
    of the modes it offers until the expiry; the safety guard still applies."""

    async def act(body: dict[str, Any]) -> dict[str, Any]:
        r = commands.battery_mode(body, clock.now())
        control.set_battery_mode(r.device_id, r.mode, r.expires_at, r.power_w)
        return {
            "device_id": r.device_id,
            "mode": str(r.mode),
            "expires_at": r.expires_at.isoformat(),
        }

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
