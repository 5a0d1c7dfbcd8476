"""Today's and this month's cost, and the battery's saving, for the page: the half-hour
energies from the store's 30-min roll-ups, priced by the planner's tariff, through the pure
arithmetic of hems.planning.costs (whose docstring states the method)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hems.core.clock import Clock
from hems.core.readings import Quantity, Role
from hems.core.state import SiteState
from hems.planning.costs import METHOD, HalfHour, bill, saved
from hems.planning.tariffs import Tariff
from hems.store.timeseries import ReadingStore

_HALF_HOUR = timedelta(minutes=30)


class Money:
    def __init__(
        self,
        store: ReadingStore,
        tariff: Tariff,
        state: SiteState,
        clock: Clock,
        tz: ZoneInfo,
        currency: str,
    ) -> None:
        self._store, self._tariff, self._state = store, tariff, state
        self._clock, self._tz, self._currency = clock, tz, currency

    async def view(self) -> dict[str, Any]:
        now = self._clock.now().astimezone(self._tz)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        return {
            "currency": self._currency,
            "method": METHOD,
            "today": await self._period(day, now),
            "month": await self._period(month, now),
        }

    async def _period(self, since: datetime, until: datetime) -> dict[str, Any]:
        periods = await self.half_hours(since, until)
        b = bill(periods, self._tariff.standing_charge_per_day)
        return {
            "cost": round(b.cost, 2),
            "saved": round(saved(periods), 2),
            "import_kwh": round(b.import_kwh, 2),
            "export_kwh": round(b.export_kwh, 2),
            "half_hours": b.periods,
            "gaps": b.gaps,
        }

    async def half_hours(self, since: datetime, until: datetime) -> list[HalfHour]:
        roles = self._state.devices
        grid = next((d for d, r in sorted(roles.items()) if r is Role.GRID), None)
        if grid is None:
            return []
        batteries = [d for d, r in sorted(roles.items()) if r is Role.BATTERY]
        grid_rows = await self._store.series(grid, Quantity.POWER_W, since, until, 1800)
        charge: dict[str, float] = {}
        discharge: dict[str, float] = {}
        for b in batteries:
            for row in await self._store.series(b, Quantity.POWER_W, since, until, 1800):
                key = str(row["start"])
                charge[key] = charge.get(key, 0.0) + float(row["import_wh"] or 0.0)
                discharge[key] = discharge.get(key, 0.0) + float(row["export_wh"] or 0.0)
        if not grid_rows:
            return []
        first = datetime.fromisoformat(str(grid_rows[0]["start"]))
        n = int((until - first) / _HALF_HOUR) + 1
        prices = self._tariff.prices(first, n, 30)
        out = []
        for row in grid_rows:
            start = datetime.fromisoformat(str(row["start"]))
            i = min(n - 1, int((start - first) / _HALF_HOUR))
            key = str(row["start"])
            out.append(
                HalfHour(
                    start,
                    _wh(row["import_wh"]),
                    _wh(row["export_wh"]),
                    charge.get(key, 0.0),
                    discharge.get(key, 0.0),
                    prices.import_per_kwh[i],
                    prices.export_per_kwh[i],
                )
            )
        return out


def _wh(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
