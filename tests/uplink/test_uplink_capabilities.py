"""`describe_site`: the capabilities the gateway publishes, from roles and ratings alone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.core.assets import DeviceRatings
from hems.core.readings import Role
from hems.uplink.capabilities import describe_site
from hems.uplink.messages import Asset, Capabilities

if TYPE_CHECKING:  # fixtures come from conftest.py
    from hil.aggregator import MosquittoBroker

R = DeviceRatings
BATTERY = R(max_charge_w=3600, max_discharge_w=2500, capacity_wh=9500)


@pytest.mark.parametrize(
    ("role", "ratings", "control", "lo_w", "hi_w", "capacity_wh"),
    [
        (Role.BATTERY, BATTERY, "power_setpoint", -2500, 3600, 9500),
        # controlled but not planned: no capacity stated
        (Role.BATTERY, R(max_charge_w=3000, max_discharge_w=3000), "power_setpoint", -3000, 3000,
         None),
        # measured only: its capacity is still worth telling
        (Role.BATTERY, R(capacity_wh=5000), "none", None, None, 5000),
        (Role.BATTERY, None, "none", None, None, None),
        (Role.PV, R(rated_w=4000), "curtail_pct", -4000, 0, None),
        (Role.PV, None, "none", None, None, None),
        (Role.EV, R(max_power_w=16 * 230 * 1), "current_limit", 0, 3680, None),
        (Role.EV, None, "none", None, None, None),  # a charger not served over OCPP
        (Role.LOAD, R(load_power_w=3000), "on_off", 0, 3000, None),
        (Role.LOAD, None, "none", None, None, None),
        (Role.GRID, None, "none", None, None, None),
    ],
    ids=[
        "battery", "battery-unplanned", "battery-measured", "battery-bare", "pv", "pv-unrated",
        "charger", "ev-not-ocpp", "load", "load-unrated", "grid",
    ],
)  # fmt: skip
def test_each_role_is_described_from_its_ratings(
    role: Role,
    ratings: DeviceRatings | None,
    control: str,
    lo_w: float | None,
    hi_w: float | None,
    capacity_wh: float | None,
) -> None:
    caps = describe_site({"d": role}, {} if ratings is None else {"d": ratings},
                         control_enabled=True, curtailable={"d"})  # fmt: skip
    assert caps.assets == [
        Asset(asset_id="d", role=role.value, control=control, min_power_w=lo_w,  # type: ignore[arg-type]
              max_power_w=hi_w, energy_capacity_wh=capacity_wh)
    ]  # fmt: skip


def test_control_disabled_says_none_but_keeps_ranges_and_limits() -> None:
    roles = {"pv": Role.PV, "bat": Role.BATTERY, "cp": Role.EV, "meter": Role.GRID}
    ratings = {"pv": R(rated_w=4000), "bat": BATTERY, "cp": R(max_power_w=11040)}
    caps = describe_site(
        roles, ratings, control_enabled=False, import_limit_w=18400, export_limit_w=3680
    )
    assert caps == Capabilities(
        assets=[
            Asset(asset_id="bat", role="battery", control="none", min_power_w=-2500,
                  max_power_w=3600, energy_capacity_wh=9500),
            Asset(asset_id="cp", role="ev", control="none", min_power_w=0, max_power_w=11040),
            Asset(asset_id="meter", role="grid", control="none"),
            Asset(asset_id="pv", role="pv", control="none", min_power_w=-4000, max_power_w=0),
        ],  # sorted by id
        import_limit_w=18400,
        export_limit_w=3680,
    )  # fmt: skip
    enabled = describe_site(roles, ratings, control_enabled=True, curtailable={"pv"})
    assert [a.control for a in enabled.assets] == [
        "power_setpoint", "current_limit", "none", "curtail_pct"
    ]  # fmt: skip
    assert (enabled.import_limit_w, enabled.export_limit_w) == (None, None)


def test_ratings_of_devices_not_on_the_site_are_ignored() -> None:
    caps = describe_site({}, {"gone": BATTERY}, control_enabled=True)
    assert caps.assets == []


def test_a_pv_the_loop_cannot_curtail_is_not_offered_as_curtail_pct() -> None:
    """Issue 13: only the inverters the control loop can limit are `curtail_pct` (a SunSpec
    unit without model 123/704, a profile without `controls.pv_limit`: measured only)."""
    roles = {"roof": Role.PV, "shed": Role.PV}
    ratings = {"roof": R(rated_w=4000), "shed": R(rated_w=2000)}
    caps = describe_site(roles, ratings, control_enabled=True, curtailable={"roof"})
    assert caps.assets == [
        Asset(asset_id="roof", role="pv", control="curtail_pct", min_power_w=-4000,
              max_power_w=0),
        Asset(asset_id="shed", role="pv", control="none", min_power_w=-2000, max_power_w=0),
    ]  # fmt: skip
    assert describe_site(roles, ratings, control_enabled=True).assets[0].control == "none"


async def test_capabilities_are_sent_again_when_they_change(
    tmp_path: Path, broker: MosquittoBroker, aggregator_key: Ed25519PrivateKey
) -> None:
    """A PV read as curtailable after start (its unit silent at start) is offered to the
    aggregator from then on: `capabilities_changed` sends the site's capabilities again,
    through the outbox, over a real Mosquitto."""
    from hems.core.clock import RealClock
    from hems.core.state import SiteState
    from hems.store.db import Database
    from hems.uplink.channel import Uplink
    from tests.testlib import running, wait_until
    from tests.uplink.test_uplink_mqtt import SITE, config

    clock = RealClock()
    curtailable: set[str] = set()
    state = SiteState(clock)
    state.register_device("roof", Role.PV)

    def caps() -> Capabilities:
        return describe_site(
            {"roof": Role.PV}, {"roof": R(rated_w=4000)}, control_enabled=True,
            curtailable=curtailable,
        )  # fmt: skip

    db = await Database.open(tmp_path / "hems.db")
    uplink = Uplink(config(broker, aggregator_key), SITE, state, db, clock,
                    storage_path=tmp_path / "hems.db", capabilities=caps)  # fmt: skip
    seen: list[str] = []
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
            await sub.subscribe(uplink.topic("capabilities"), qos=1)

            async def listen() -> None:
                async for msg in sub.messages:
                    assert isinstance(msg.payload, bytes)
                    seen.append(json.loads(msg.payload)["payload"]["assets"][0]["control"])

            async with running(uplink):
                task = asyncio.create_task(listen())
                try:
                    await wait_until(lambda: seen == ["none"], 10, "the capabilities at start")
                    curtailable.add("roof")
                    uplink.capabilities_changed()
                    await wait_until(lambda: seen == ["none", "curtail_pct"], 10, "sent again")
                finally:
                    task.cancel()
    finally:
        await db.close()
