"""The typed events a charger tells its listener, against the simulator."""

from __future__ import annotations

from ocpp_helpers import central_system, charger_sim, ocpp_config, wait_for

from hems.core.capabilities import EvState
from hems.devices.ocpp import (
    ChargerBooted,
    ChargerEvent,
    ChargerOffline,
    ChargerStatusChanged,
    LimitOutcome,
    LimitSent,
    MeterUpdated,
    TransactionStarted,
)
from hil.ev import EvModel


async def test_a_session_is_told_as_typed_events(version: str) -> None:
    events: list[ChargerEvent] = []
    async with central_system(ocpp_config(), listener=events.append) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version, ev=EvModel(soc_pct=30)):
            await wait_for(lambda: charger.current_state() is EvState.CHARGING, what="charging")
            await charger.set_limit(10.0, 3)
            await wait_for(
                lambda: any(isinstance(e, LimitOutcome) for e in events), what="limit judged"
            )
        await wait_for(
            lambda: any(isinstance(e, ChargerOffline) for e in events), what="offline event"
        )
    # Every event names the hems device id as well as the OCPP identity.
    assert {(e.device_id, e.identity) for e in events} == {("cp1", "CP1")}
    boot = next(e for e in events if isinstance(e, ChargerBooted))
    assert (boot.version, boot.vendor, boot.pending) == (version, "hems-sim", False)
    states = [e.state for e in events if isinstance(e, ChargerStatusChanged)]
    assert EvState.CHARGING in states and all(isinstance(s, EvState) for s in states)
    started = next(e for e in events if isinstance(e, TransactionStarted))
    assert started.transaction_id == charger.transaction.transaction_id  # type: ignore[union-attr]
    sent = next(e for e in events if isinstance(e, LimitSent))
    assert (sent.current_a, sent.phases, sent.status) == (10.0, 3, "Accepted")
    outcome = next(e for e in events if isinstance(e, LimitOutcome))
    assert outcome.followed and outcome.limit_a == 10.0 and outcome.measured_a <= 10.0
    meter = [e for e in events if isinstance(e, MeterUpdated)]
    assert meter and meter[-1].session_energy_wh > 0
    assert [type(e) for e in events].index(ChargerBooted) == 0


async def test_an_unknown_charger_is_told_under_its_derived_device_id() -> None:
    events: list[ChargerEvent] = []
    cfg = ocpp_config(chargers=[], allow_pending_unknown=True)
    async with central_system(cfg, listener=events.append) as (cs, _state):
        async with charger_sim(cs, identity="Garage.CP.7", password=None):
            await wait_for(lambda: any(isinstance(e, ChargerBooted) for e in events), what="boot")
    boot = next(e for e in events if isinstance(e, ChargerBooted))
    assert (boot.device_id, boot.identity, boot.pending) == ("garage-cp-7", "Garage.CP.7", True)
    assert cs.chargers["garage-cp-7"].pending
