"""A charger's merged meter sample as the `Reading`s hems publishes to `SiteState`."""

from __future__ import annotations

from datetime import datetime

from hems.core.readings import Quantity, Reading
from hems.devices.ocpp.model import MeterSample, session_energy_wh
from hems.devices.ocpp.store import Transaction

_PHASE_QUANTITY = {
    "L1": Quantity.CURRENT_L1_A,
    "L2": Quantity.CURRENT_L2_A,
    "L3": Quantity.CURRENT_L3_A,
    "": Quantity.CURRENT_A,
}


def readings(
    device_id: str, sample: MeterSample, transaction: Transaction | None, now: datetime
) -> list[Reading]:
    """Every quantity `sample` holds; the session energy only while a transaction runs."""
    out: list[Reading] = []
    if sample.power_w is not None:
        out.append(Reading(device_id, Quantity.POWER_W, sample.power_w, now))
    for phase, amps in sample.current_a.items():
        out.append(Reading(device_id, _PHASE_QUANTITY[phase], amps, now))
    if sample.energy_wh is not None:
        out.append(Reading(device_id, Quantity.ENERGY_IMPORT_WH, sample.energy_wh, now))
    if transaction is not None:
        session = session_energy_wh(transaction.meter_last_wh, transaction.meter_start_wh)
        if session is not None:
            out.append(Reading(device_id, Quantity.SESSION_ENERGY_WH, session, now))
    if sample.soc_pct is not None:
        out.append(Reading(device_id, Quantity.SOC_PCT, sample.soc_pct, now))
    if sample.voltage_v is not None:
        out.append(Reading(device_id, Quantity.VOLTAGE_V, sample.voltage_v, now))
    return out
