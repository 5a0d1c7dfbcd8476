"""1p/3p switching with its cooldown, on the wire and as a pure rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ocpp_helpers import PASSWORD, central_system, charger_sim, ocpp_config, wait_for

from hems.core.clock import ManualClock
from hems.core.readings import Quantity
from hems.devices.ocpp.model import decide_limit


@pytest.mark.parametrize(
    ("version", "quirks"), [("1.6", "phase-switch-1.6"), ("2.0.1", "tx-default-watts-2.0.1")]
)
async def test_phase_switch_respects_cooldown(version: str, quirks: str) -> None:
    clock = ManualClock(datetime(2026, 6, 1, 12, tzinfo=UTC))
    cfg = ocpp_config(
        chargers=[
            {
                "id": "cp1",
                "identity": "CP1",
                "password": PASSWORD,
                "quirks": quirks,
                "phase_switch_cooldown_s": 300,
            }
        ]
    )
    async with central_system(cfg, clock=clock) as (cs, state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version) as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            await charger.set_limit(16, 1)
            await wait_for(lambda: sim.phases == 1 and sim.current_a == 16.0, what="1 phase")
            await wait_for(
                lambda: state.fresh_value("cp1", Quantity.CURRENT_L2_A) == 0.0, what="L2 idle"
            )
            assert charger.active_phases == 1
            # Back to 3 phases at once: held by the cooldown, the current still applies.
            await clock.advance(60)
            await charger.set_limit(10, 3)
            await wait_for(lambda: sim.current_a == 10.0, what="10 A")
            assert sim.phases == 1 and charger.active_phases == 1
            await clock.advance(241)
            await charger.set_limit(10, 3)
            await wait_for(lambda: sim.phases == 3, what="3 phases after cooldown")
            await wait_for(
                lambda: state.fresh_value("cp1", Quantity.CURRENT_L3_A) == 10.0, what="L3 at 10 A"
            )


async def test_charger_without_switching_keeps_its_phases() -> None:
    from structlog.testing import capture_logs

    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs) as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            with capture_logs() as logs:
                await charger.set_limit(14, 1)
            await wait_for(lambda: sim.current_a == 14.0, what="14 A")
            assert sim.phases == 3 and charger.active_phases == 3
    # Issue 16: an accepted limit (the control loop's refresh, all day) logs at debug.
    sent = [e for e in logs if e["event"] == "ocpp limit sent"]
    assert sent and all(e["log_level"] == "debug" for e in sent)


KW = {
    "min_current_a": 6.0,
    "max_current_a": 32.0,
    "max_phases": 3,
    "active_phases": 3,
    "phase_switching": True,
    "since_last_switch_s": None,
    "cooldown_s": 300.0,
}


@pytest.mark.parametrize(
    ("requested", "overrides", "expected_a", "expected_phases", "note"),
    [
        ((16.0, 3), {}, 16.0, 3, ""),
        ((5.9, 3), {}, 0.0, 3, "below the 6 A minimum: pause"),
        ((0.0, 3), {}, 0.0, 3, ""),
        ((40.0, 3), {}, 32.0, 3, "clamped to max 32 A"),
        ((10.0, 1), {}, 10.0, 1, ""),
        ((10.0, 1), {"since_last_switch_s": 100.0}, 10.0, 3, "cooldown (200 s left)"),
        ((10.0, 1), {"phase_switching": False}, 10.0, 3, "cannot switch phases"),
        ((10.0, 3), {"max_phases": 1, "active_phases": 1}, 10.0, 1, "wired for 1 phase"),
        ((6.04, 3), {}, 6.0, 3, ""),
    ],
)
def test_decide_limit_table(requested, overrides, expected_a, expected_phases, note) -> None:
    decision = decide_limit(*requested, **{**KW, **overrides})
    assert decision.current_a == expected_a
    assert decision.phases == expected_phases
    assert note in decision.note


@pytest.mark.parametrize("bad", [(float("nan"), 3), (-1.0, 3), (10.0, 2)])
def test_decide_limit_rejects_nonsense(bad) -> None:
    with pytest.raises(ValueError, match=r"current_a|phases"):
        decide_limit(*bad, **KW)
