"""Every charging profile hems sends expires (validTo), is renewed by each new send, and a
charger whose central system is gone falls back to its own default after the validity."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from ocpp_helpers import PASSWORD, charger_sim, ocpp_config, stop_task, wait_for

from hems.config import ConfigErrors, validate
from hems.core.clock import ManualClock
from hems.core.state import SiteState
from hems.devices.ocpp.server import OcppCentralSystem
from hems.errors import DeviceRejected
from hil.chargepoint import SimChargePoint, SimQuirks

START = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _valid_to(sim: SimChargePoint) -> datetime | None:
    profile = next(iter(sim.profiles.values()))[0]
    raw = profile.get("valid_to")
    return None if raw is None else datetime.fromisoformat(raw)


def _profiles_sent(sim: SimChargePoint) -> int:
    return sum(1 for what, _ in sim.received if what == "profile")


async def test_profile_expires_after_the_central_system_dies(version: str) -> None:
    clock = ManualClock(START)
    cfg = ocpp_config(profile_validity_s=300)
    cs = OcppCentralSystem(cfg, SiteState(clock), clock, None)
    server = asyncio.create_task(cs.run())
    await asyncio.wait_for(cs.started.wait(), 5)
    charger = cs.charger("cp1")
    async with charger_sim(cs, version=version, clock=clock) as sim:
        try:
            await wait_for(lambda: charger.booted, what="boot")
            # The after-boot calls (meter values, SoC measurand) run on their own; one that
            # ends after our first limit would re-assert it and count as a profile sent.
            await wait_for(charger.followups_idle, what="post-boot follow-ups done")
            await charger.set_limit(10, 3)
            assert _valid_to(sim) == START + timedelta(seconds=300)
            assert sim.offered_a() == 10.0
            assert charger.snapshot()["limit_expires_after_s"] == 300
            # The control loop's refresh: the same limit again, a new validTo.
            await clock.advance(100)
            await charger.set_limit(10, 3)
            assert _profiles_sent(sim) == 2 and len(sim.profiles) == 1
            assert _valid_to(sim) == START + timedelta(seconds=400)
        finally:
            await stop_task(server)  # hems dies: nobody clears or renews the profile
        await wait_for(lambda: not sim.connected.is_set(), what="connection gone")
        await clock.advance(299)
        assert sim.offered_a() == 10.0  # still within the last profile's validity
        await clock.advance(2)
        assert sim.offered_a() == sim.cfg.max_current_a  # back on its own default
        assert sim.profiles == {}
        assert ("profile_expired", 1601 if version == "1.6" else 2001) in sim.received


async def test_charger_refusing_valid_to_gets_the_profile_without(version: str) -> None:
    clock = ManualClock(START)
    cfg = ocpp_config()
    cs = OcppCentralSystem(cfg, SiteState(clock), clock, None)
    server = asyncio.create_task(cs.run())
    await asyncio.wait_for(cs.started.wait(), 5)
    charger = cs.charger("cp1")
    try:
        async with charger_sim(
            cs, version=version, clock=clock, quirks=SimQuirks(refuses_valid_to=True)
        ) as sim:
            await wait_for(lambda: charger.booted, what="boot")
            # The after-boot calls (meter values, SoC measurand) run on their own; one that
            # ends after our first limit would re-assert it and count as a profile sent.
            await wait_for(charger.followups_idle, what="post-boot follow-ups done")
            await charger.set_limit(10, 3)
            assert _profiles_sent(sim) == 2  # with validTo (Rejected), then without
            assert _valid_to(sim) is None and sim.offered_a() == 10.0
            assert charger.profile_expiry is False
            assert charger.snapshot()["limit_expires_after_s"] is None
            await charger.set_limit(8, 3)
            assert _profiles_sent(sim) == 3  # no more retries: sent without validTo
            assert sim.offered_a() == 8.0
    finally:
        await stop_task(server)


async def test_refusal_for_another_reason_is_retried_once_only(version: str) -> None:
    clock = ManualClock(START)
    cfg = ocpp_config()
    cs = OcppCentralSystem(cfg, SiteState(clock), clock, None)
    server = asyncio.create_task(cs.run())
    await asyncio.wait_for(cs.started.wait(), 5)
    charger = cs.charger("cp1")
    try:
        async with charger_sim(
            cs, version=version, clock=clock, quirks=SimQuirks(profile_response="Rejected")
        ) as sim:
            await wait_for(lambda: charger.booted, what="boot")
            # The after-boot calls (meter values, SoC measurand) run on their own; one that
            # ends after our first limit would re-assert it and count as a profile sent.
            await wait_for(charger.followups_idle, what="post-boot follow-ups done")
            with pytest.raises(DeviceRejected):
                await charger.set_limit(10, 3)
            assert _profiles_sent(sim) == 2
            assert charger.profile_expiry is True  # validTo was not the cause
            with pytest.raises(DeviceRejected):
                await charger.set_limit(10, 3)
            assert _profiles_sent(sim) == 3
            last = [p for what, p in sim.received if what == "profile"][-1]
            assert last.get("valid_to") is not None
    finally:
        await stop_task(server)


def test_profile_validity_must_outlast_refreshes() -> None:
    charger = {"type": "ocpp", "id": "cp1", "password": PASSWORD}
    base = {"site": {"id": "home"}, "devices": [charger]}
    with pytest.raises(ConfigErrors) as err:
        validate(
            {
                **base,
                "ocpp": {"enabled": True, "profile_validity_s": 100},
                "control": {"enabled": True, "refresh_s": 40},
            }
        )
    assert any(
        "ocpp.profile_validity_s: must be at least 3 x control.refresh_s (120 s)" in p
        for p in err.value.problems
    ), err.value.problems
    ok = validate({**base, "ocpp": {"enabled": True}, "control": {"enabled": True}})
    assert ok.ocpp.profile_validity_s == 300 and ok.control.refresh_s == 20
    with pytest.raises(ConfigErrors) as err:
        validate({**base, "ocpp": {"enabled": True, "profile_validity_s": 10}})
    assert any("ocpp.profile_validity_s: must be 60" in p for p in err.value.problems)
