"""Today's cost and the battery's saving from real roll-ups in SQLite, priced by the tariff."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hems.app.money import Money
from hems.core.clock import ManualClock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.planning.config import TariffConfig
from hems.planning.tariffs import Tariff
from hems.store.db import Database
from hems.store.timeseries import ReadingStore

T0 = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)  # London is on UTC in December


async def test_the_day_is_billed_and_the_battery_saving_counted(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "hems.db")
    try:
        state = SiteState(clock, stale_after_s=3600)
        state.register_device("grid", Role.GRID)
        state.register_device("bat", Role.BATTERY)
        store = ReadingStore(db, clock)
        # First half hour: import 2 kW, of which 2 kW charges the battery. Second: the
        # battery discharges 1 kW and the house imports nothing.
        for minute in range(0, 60):
            at = T0 + timedelta(minutes=minute)
            grid_w, bat_w = (2000.0, 2000.0) if minute < 30 else (0.0, -1000.0)
            store.add([Reading("grid", Quantity.POWER_W, grid_w, at),
                       Reading("bat", Quantity.POWER_W, bat_w, at)])  # fmt: skip
        await store.flush()
        await clock.advance(3600)
        tariff = Tariff(TariffConfig(fixed_import_per_kwh=0.20, fixed_export_per_kwh=0.10))
        money = Money(store, tariff, state, clock, ZoneInfo("Europe/London"), "GBP")
        view = await money.view()
        today = view["today"]
        assert today["half_hours"] == 2 and today["gaps"] == 0
        # ~1 kWh imported (2 kW for 29-30 minutes of samples) at 20p.
        assert math.isclose(today["import_kwh"], 1.0, abs_tol=0.05)
        assert math.isclose(today["cost"], 0.2 * today["import_kwh"], abs_tol=0.01)
        # Without the battery: 0 kWh the first half hour, ~0.5 kWh the second, so the saving
        # is (0.5 - 1.0) kWh × 20p: negative, because the 0.5 kWh still stored is not
        # credited (the method says so) and a flat price rewards no shifting.
        assert math.isclose(today["saved"], -0.10, abs_tol=0.01)
        assert view["method"].startswith("same tariff")
        assert view["month"]["half_hours"] == 2
    finally:
        await db.close()
