"""`MeterService`: the entry point the app runs for smart meters and half-hour intervals.

It builds a `P1Meter` or `GlowMeter` for every `type: p1` / `type: glow-mqtt` entry and
records half-hourly import/export (table `meter_intervals`) for them and for any other
grid-role device that publishes cumulative energy (Modbus meters via SunSpec or a profile),
by listening to SiteState.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.devices.meters.config import GlowMeterConfig, IntervalSettings, P1MeterConfig
from hems.devices.meters.intervals import IntervalRecorder
from hems.store.db import Database

if TYPE_CHECKING:
    from hems.devices.meters.glow import GlowMeter
    from hems.devices.meters.p1 import P1Meter


class MeterService:
    def __init__(
        self,
        devices: Iterable[Any],
        state: SiteState,
        clock: Clock,
        db: Database | None,
        flush_interval_s: float = 10.0,
    ) -> None:
        """`devices`: every entry of `Config.devices`; `db` None disables interval recording."""
        self.meters: dict[str, P1Meter | GlowMeter] = {}
        self.recorders: dict[str, IntervalRecorder] = {}
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        for cfg in devices:
            settings: IntervalSettings | None = None
            # Each driver is imported only when a meter of its type is configured: dsmr-parser
            # alone (with dlms-cosem) took ~0.5 s of imports and ~6 MiB here.
            if isinstance(cfg, P1MeterConfig):
                from hems.devices.meters.p1 import P1Meter

                self.meters[cfg.id] = P1Meter(cfg, state, clock)
                settings = cfg.intervals
            elif isinstance(cfg, GlowMeterConfig):
                from hems.devices.meters.glow import GlowMeter

                self.meters[cfg.id] = GlowMeter(cfg, state, clock)
                settings = cfg.intervals
            elif getattr(cfg, "role", None) is Role.GRID:
                settings = IntervalSettings()
            if db is not None and settings is not None and settings.enabled:
                self.recorders[cfg.id] = IntervalRecorder(
                    cfg.id, db, clock, settings.fresh_s, settings.missing_after_s
                )
        if self.recorders:
            state.add_listener(self.on_readings)

    def on_readings(self, batch: list[Reading]) -> None:
        """SiteState listener: a sample needs both cumulative registers in one batch."""
        seen: dict[str, dict[Quantity, Reading]] = {}
        for r in batch:
            if r.device_id in self.recorders and r.quantity in (
                Quantity.ENERGY_IMPORT_WH,
                Quantity.ENERGY_EXPORT_WH,
            ):
                seen.setdefault(r.device_id, {})[r.quantity] = r
        for device_id, found in seen.items():
            imp = found.get(Quantity.ENERGY_IMPORT_WH)
            exp = found.get(Quantity.ENERGY_EXPORT_WH)
            if imp is not None and exp is not None:
                self.recorders[device_id].add(imp.at, imp.value, exp.value)

    async def flush(self) -> None:
        for recorder in self.recorders.values():
            await recorder.flush()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for device_id, meter in self.meters.items():
                tg.create_task(meter.run(), name=f"meter:{device_id}")
            if self.recorders:
                tg.create_task(self._flush_loop(), name="meter-intervals")

    async def _flush_loop(self) -> None:
        while True:
            await self._clock.sleep(self._flush_interval_s)
            raise_if_cancelling()
            await self.flush()
