"""OCPP central system (1.6J and 2.0.1) for home EV chargers.

Entry class: `OcppCentralSystem(cfg, state, clock, db)`; each charger is an `OcppCharger`
(an `EvCharger`) found with `central.charger(device_id)`. Imported lazily so that loading
the config (which needs only `OcppConfig`) does not pull in websockets and ocpp.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChargerConfig", "OcppCentralSystem", "OcppCharger", "OcppConfig"]
_WHERE = {
    "ChargerConfig": "hems.devices.ocpp.config",
    "OcppConfig": "hems.devices.ocpp.config",
    "OcppCharger": "hems.devices.ocpp.charger",
    "OcppCentralSystem": "hems.devices.ocpp.server",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
