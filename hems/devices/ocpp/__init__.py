"""OCPP central system (1.6J and 2.0.1) for home EV chargers.

Entry class: `OcppCentralSystem(cfg, state, clock, db, listener=…)`; each charger is an
`OcppCharger` (an `EvCharger`) found with `central.charger(device_id)`; the listener gets
typed `ChargerEvent`s. Names are imported lazily, so loading the config (which needs only
`OcppConfig`) does not pull in websockets and ocpp.

Modules:
  server.py        websocket server: handshake, authentication, one charger per identity
  charger.py       `OcppCharger`, the facade the control loop, web page and CLI use
  v16.py, v201.py  the version-specific links: handlers and calls of one connection
  link.py, rpc.py  what both links share; strict OCPP-J framing and routing
  limits.py        deciding, sending (profile or quirk fallback) and judging a limit
  transactions.py  the running transaction and the last session's energy
  faults.py        when a charger shows faulted and when that is over
  followups.py     calls queued by handlers, run after they have answered
  readings.py      the merged meter sample as published `Reading`s
  events.py        the typed events a charger emits
  model.py         pure rules: meter parsing, state derivation, limit decisions
  quirks.py        per-vendor quirk profiles (drivers/chargers)
  store.py         transactions, commands and seen chargers in SQLite
  config.py        `OcppConfig`, `ChargerConfig`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hems.devices.ocpp.charger import OcppCharger
    from hems.devices.ocpp.config import ChargerConfig, OcppConfig
    from hems.devices.ocpp.events import (
        ChargerBooted,
        ChargerEvent,
        ChargerFaulted,
        ChargerListener,
        ChargerOffline,
        ChargerStatusChanged,
        LimitOutcome,
        LimitSent,
        MeterUpdated,
        TransactionStarted,
        TransactionStopped,
    )
    from hems.devices.ocpp.server import OcppCentralSystem

__all__ = [
    "ChargerBooted",
    "ChargerConfig",
    "ChargerEvent",
    "ChargerFaulted",
    "ChargerListener",
    "ChargerOffline",
    "ChargerStatusChanged",
    "LimitOutcome",
    "LimitSent",
    "MeterUpdated",
    "OcppCentralSystem",
    "OcppCharger",
    "OcppConfig",
    "TransactionStarted",
    "TransactionStopped",
]
_EVENTS = (
    "ChargerBooted",
    "ChargerEvent",
    "ChargerFaulted",
    "ChargerListener",
    "ChargerOffline",
    "ChargerStatusChanged",
    "LimitOutcome",
    "LimitSent",
    "MeterUpdated",
    "TransactionStarted",
    "TransactionStopped",
)
_WHERE = {
    "ChargerConfig": "hems.devices.ocpp.config",
    "OcppConfig": "hems.devices.ocpp.config",
    "OcppCharger": "hems.devices.ocpp.charger",
    "OcppCentralSystem": "hems.devices.ocpp.server",
    **dict.fromkeys(_EVENTS, "hems.devices.ocpp.events"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
