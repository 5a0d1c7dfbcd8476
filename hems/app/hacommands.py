"""The owner's controls as Home Assistant entities: which exist, their states, and what a
command does (hems.uplink.homeassistant carries them over MQTT).

Every command is validated by the same functions the web page and API use
(hems.core.commands) and applied through the same stages (EvSessions, the control loop,
flex), so HA can do nothing the page refuses. Each command is logged, accepted or rejected
with the field and the reason; a rejected one changes nothing.

Per charger the loop controls: its mode (`select`), the departure (`text`, HH:MM local) and
the energy wanted (`number`, kWh) of the session in progress. Per controllable battery: a mode
override (`select`: `auto`, i.e. none, or one of the modes the battery offers), held for the
`number` of minutes set beside it, at the `number` of watts set beside it (force-charge and
power-setpoint), and the override's expiry (`sensor`). Flexibility: the next accepted event's
status (`sensor`) and one opt-out `button` per accepted event not yet over.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from hems.core import commands
from hems.core.clock import Clock
from hems.errors import DeviceError, HemsError
from hems.uplink.homeassistant import ControlEntity

if TYPE_CHECKING:
    from hems.app.evsessions import EvSessions
    from hems.control.loop import ControlLoop
    from hems.flex.service import FlexService

log = structlog.get_logger(__name__)

AUTO = "auto"  # the battery select's "no override"
MAX_PAYLOAD_BYTES = 256
DEFAULT_MINUTES = 60.0
# HH:MM, or empty: HA checks states against the pattern too, and no session shows as empty.
_HH_MM = r"^(([01][0-9]|2[0-3]):[0-5][0-9])?$"


class _Rejected(HemsError):
    """A command refused before any stage saw it."""


class HaControls:
    """The control surface for hems.uplink.homeassistant.HomeAssistantDiscovery."""

    def __init__(
        self,
        clock: Clock,
        tz: ZoneInfo,
        control: ControlLoop,
        ev_sessions: EvSessions | None,
        chargers: Collection[str],
        flex: FlexService | None,
    ) -> None:
        self._clock = clock
        self._tz = tz
        self._control = control
        self._sessions = ev_sessions
        self._chargers = [c for c in chargers if control.controls(c)] if ev_sessions else []
        self._batteries = control.battery_modes()
        self._flex = flex
        # The duration and power of the next battery override, set from HA (not stored).
        self.minutes = dict.fromkeys(self._batteries, DEFAULT_MINUTES)
        self.power_w = dict.fromkeys(self._batteries, 0.0)
        self._events: dict[str, str] = {}  # button key → event id

    # -- entities and states ------------------------------------------------------------
    async def entities(self) -> list[ControlEntity]:
        out: list[ControlEntity] = []
        for c in self._chargers:
            out += [
                ControlEntity(component="select", key=f"ev_mode_{c}", name="EV mode",
                              device_id=c, fields={"options": list(commands.EV_MODES),
                                                   "icon": "mdi:ev-station"}),
                ControlEntity(component="text", key=f"ev_departure_{c}", name="EV departure",
                              device_id=c, fields={"pattern": _HH_MM, "min": 0, "max": 5,
                                                   "icon": "mdi:clock-end"}),
                ControlEntity(component="number", key=f"ev_target_{c}", name="EV energy wanted",
                              device_id=c, fields={"min": 0, "max": 200, "step": 0.5,
                                                   "mode": "box", "unit_of_measurement": "kWh",
                                                   "device_class": "energy"}),
            ]  # fmt: skip
        for b, modes in self._batteries.items():
            out += [
                ControlEntity(component="select", key=f"battery_mode_{b}", name="Battery mode",
                              device_id=b, fields={"options": [AUTO, *modes],
                                                   "icon": "mdi:home-battery"}),
                ControlEntity(component="number", key=f"battery_minutes_{b}",
                              name="Battery mode duration", device_id=b,
                              fields={"min": 1, "max": commands.MAX_OVERRIDE_MINUTES, "step": 1,
                                      "mode": "box", "unit_of_measurement": "min",
                                      "entity_category": "config"}),
                ControlEntity(component="number", key=f"battery_power_{b}",
                              name="Battery mode power", device_id=b,
                              fields={"min": -100_000, "max": 100_000, "step": 100,
                                      "mode": "box", "unit_of_measurement": "W",
                                      "device_class": "power", "entity_category": "config"}),
                ControlEntity(component="sensor", key=f"battery_mode_until_{b}",
                              name="Battery mode until", device_id=b, commandable=False,
                              fields={"device_class": "timestamp"}),
            ]  # fmt: skip
        if self._flex is not None:
            out.append(
                ControlEntity(component="sensor", key="flex_event", name="Flexibility event",
                              commandable=False, fields={"icon": "mdi:transmission-tower"})
            )  # fmt: skip
            events: dict[str, str] = {}
            for e in await self._flex.active_events():
                key = _event_key(e.event_id)
                events[key] = e.event_id
                start = e.start.astimezone(self._tz).strftime("%d %b %H:%M")
                out.append(
                    ControlEntity(component="button", key=key, stateful=False,
                                  name=f"Opt out of {e.kind} event {start}",
                                  fields={"icon": "mdi:cancel"})
                )  # fmt: skip
            self._events = events  # swapped whole: a command may look up meanwhile
        return out

    async def states(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for c in self._chargers:
            assert self._sessions is not None
            out[f"ev_mode_{c}"] = self._control.ev_mode(c)
            session = self._sessions.session(c)
            departure = session.departure.astimezone(self._tz).strftime("%H:%M") if session else ""
            out[f"ev_departure_{c}"] = departure
            energy_wh = session.energy_wh if session else None
            out[f"ev_target_{c}"] = "None" if energy_wh is None else f"{energy_wh / 1000:g}"
        overrides = self._control.status()["overrides"]
        for b in self._batteries:
            held = overrides.get(b)
            out[f"battery_mode_{b}"] = (held or {}).get("mode") or AUTO
            out[f"battery_mode_until_{b}"] = held["expires_at"] if held else "None"
            out[f"battery_minutes_{b}"] = f"{self.minutes[b]:g}"
            out[f"battery_power_{b}"] = f"{self.power_w[b]:g}"
        if self._flex is not None:
            now = self._clock.now()
            events = await self._flex.active_events()
            out["flex_event"] = (
                "none"
                if not events
                else ("active" if any(e.start <= now < e.end for e in events) else "upcoming")
            )
        return out

    # -- commands -----------------------------------------------------------------------
    async def command(self, key: str, payload: bytes) -> bool:
        try:
            text = _text(payload)
            result = await self._dispatch(key, text)
        except HemsError as exc:
            field, reason = _field_and_reason(exc)
            log.warning("home assistant command rejected", entity=key, field=field,
                        reason=reason, payload=payload[:64].decode("utf-8", "replace"))  # fmt: skip
            return False
        log.info("home assistant command accepted", entity=key, **result)
        return True

    async def _dispatch(self, key: str, text: str) -> dict[str, Any]:
        for c in self._chargers:
            if key == f"ev_mode_{c}":
                return self._ev_mode(c, text)
            if key == f"ev_departure_{c}":
                return self._ev_session(c, departure=text)
            if key == f"ev_target_{c}":
                return self._ev_session(c, energy_kwh=text)
        for b in self._batteries:
            if key == f"battery_mode_{b}":
                return self._battery_mode(b, text)
            if key == f"battery_minutes_{b}":
                commands.minutes_ahead({"minutes": text}, self._clock.now())  # 1..1440
                self.minutes[b] = commands.field({"minutes": text}, "minutes", float)
                return {"device_id": b, "minutes": self.minutes[b]}
            if key == f"battery_power_{b}":
                self.power_w[b] = commands.field({"power_w": text}, "power_w", float)
                return {"device_id": b, "power_w": self.power_w[b]}
        if self._flex is not None and key in self._events:
            if text != "PRESS":
                raise _Rejected("payload: a button sends PRESS")
            event_id = self._events[key]
            await self._flex.opt_out(event_id)
            return {"event_id": event_id, "status": "opted_out"}
        raise _Rejected(f"entity: no such control {key!r}")

    def _ev_mode(self, charger_id: str, text: str) -> dict[str, Any]:
        assert self._sessions is not None
        r = commands.ev_mode({"charger_id": charger_id, "mode": text}, self._chargers)
        self._sessions.set_mode(r.charger_id, r.mode)
        return {"charger_id": r.charger_id, "mode": r.raw}

    def _ev_session(
        self, charger_id: str, *, departure: str | None = None, energy_kwh: str | None = None
    ) -> dict[str, Any]:
        """Change one part of the session in progress, keeping the other."""
        assert self._sessions is not None
        session = self._sessions.session(charger_id)
        if session is None:
            raise _Rejected("charger_id: no EV session (no car plugged in)")
        body: dict[str, Any] = {"charger_id": charger_id}
        if energy_kwh is not None:
            body["energy_kwh"] = energy_kwh
        elif session.target_soc_pct is not None:
            body |= {"soc_pct": session.soc_pct, "target_soc_pct": session.target_soc_pct}
        elif session.energy_wh is not None:
            body["energy_kwh"] = session.energy_wh / 1000
        body["departure"] = departure if departure is not None else session.departure.isoformat()
        r = commands.ev_session(body, self._chargers, self._clock.now(), self._tz)
        stored = self._sessions.set_session(
            r.charger_id, r.energy_wh, r.departure, soc_pct=r.soc_pct,
            target_soc_pct=r.target_soc_pct,
        )  # fmt: skip
        return {"charger_id": charger_id, "energy_wh": stored.energy_wh,
                "departure": stored.departure.isoformat()}  # fmt: skip

    def _battery_mode(self, device_id: str, text: str) -> dict[str, Any]:
        if text == AUTO:
            self._control.clear_override(device_id)
            return {"device_id": device_id, "mode": AUTO}
        body = {"device_id": device_id, "mode": text, "minutes": self.minutes[device_id],
                "power_w": self.power_w[device_id]}  # fmt: skip
        r = commands.battery_mode(body, self._clock.now())
        self._control.set_battery_mode(r.device_id, r.mode, r.expires_at, r.power_w)
        return {"device_id": device_id, "mode": str(r.mode), "expires_at": r.expires_at.isoformat()}


def _text(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _Rejected(f"payload: longer than {MAX_PAYLOAD_BYTES} bytes")
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _Rejected("payload: not UTF-8 text") from None


def _field_and_reason(exc: HemsError) -> tuple[str, str]:
    """`field: reason` from the message (a device error's own prefix is the device id)."""
    message = exc.reason if isinstance(exc, DeviceError) else str(exc)
    field, sep, reason = message.partition(": ")
    return (field, reason) if sep else ("", message)


def _event_key(event_id: str) -> str:
    """A topic-safe key for an event id chosen by the aggregator (any characters)."""
    slug = re.sub(r"[^a-z0-9_-]", "_", event_id.lower())[:32]
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:8]
    return f"flex_opt_out_{slug}_{digest}"


__all__ = ["AUTO", "HaControls"]
