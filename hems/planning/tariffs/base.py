"""The tariff base: slot prices from fixed prices or time-of-use bands (pure), aggregator
price signals on top, and the pure lookups the fetched tariffs share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from hems.core.localtime import minute_of_day
from hems.planning.tariff_config import TariffConfig, TouBand

if TYPE_CHECKING:
    from hems.planning.tariffs.carbon import CarbonWeight


@dataclass(frozen=True, slots=True)
class SlotPrices:
    """Prices for `n` slots, plus which of them are not real tariff prices."""

    import_per_kwh: list[float]
    export_per_kwh: list[float]
    fallback_slots: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime
    price_per_kwh: float


# -- pure price lookups ------------------------------------------------------------------


def tou_price_at(bands: list[TouBand], local: datetime) -> tuple[float, float | None] | None:
    """(import, export) of the first band covering `local` (a zone-aware local time)."""
    minute = local.hour * 60 + local.minute
    weekend = local.weekday() >= 5
    for band in bands:
        if (band.days == "weekday" and weekend) or (band.days == "weekend" and not weekend):
            continue
        if local.month not in band.months:
            continue
        s, e = minute_of_day(band.start), minute_of_day(band.end)
        inside = (s <= minute < e) if s < e else (minute >= s or minute < e)
        if s == e or inside:
            return band.import_per_kwh, band.export_per_kwh
    return None


def price_in(intervals: list[Interval], start: datetime, end: datetime) -> float | None:
    """Time-weighted mean price over [start, end); None unless fully covered."""
    covered_s = 0.0
    total = 0.0
    for iv in intervals:
        a, b = max(iv.start, start), min(iv.end, end)
        if b > a:
            d = (b - a).total_seconds()
            covered_s += d
            total += d * iv.price_per_kwh
    span_s = (end - start).total_seconds()
    if span_s <= 0 or covered_s < span_s - 1e-6:
        return None
    return total / span_s


# -- tariffs -----------------------------------------------------------------------------


@dataclass
class _Signals:
    """Aggregator price signals, which override the tariff where given."""

    imp: list[Interval] = field(default_factory=list)
    exp: list[Interval] = field(default_factory=list)


class Tariff:
    """Base: fixed prices. Subclasses override `_base_price`. Pure apart from `refresh`."""

    def __init__(self, cfg: TariffConfig, timezone: str = "Europe/London") -> None:
        self.cfg = cfg
        self.zone = ZoneInfo(timezone)
        self._signals = _Signals()
        self.version = 0  # bumped whenever prices change, so the planner replans
        self.carbon: CarbonWeight | None = None  # an optional objective weight on import

    @property
    def standing_charge_per_day(self) -> float:
        """Shown to the user; never part of the optimisation."""
        return self.cfg.standing_charge_per_day

    async def load_cache(self) -> None:
        """Load the last known prices, for a tariff that stores fetched ones."""

    async def refresh(self, *, force: bool = True) -> bool:
        """Fetch new prices (every source, or with `force=False` those due by their
        schedule); True if anything changed."""
        changed, notice = await self._refresh_weights(force)
        if changed or notice:
            self.version += 1
        return changed

    async def _refresh_weights(self, force: bool) -> tuple[bool, bool]:
        """(the weight changed, its failure notice changed: worth a replan to show it)."""
        if self.carbon is None:
            return False, False
        failed = self.carbon.failed
        changed = await self.carbon.refresh(force=force)
        return changed, self.carbon.failed != failed

    def known_until(self, direction: str = "import") -> datetime | None:
        """End of the fetched prices; None when the tariff fetches none."""
        return None

    def next_fetch_after(self, now: datetime) -> datetime | None:
        """When `refresh(force=False)` has something to do; None: never."""
        return self.carbon.due if self.carbon is not None else None

    def objective_prices(self, start: datetime, n: int, step_min: int) -> SlotPrices:
        """The prices the optimiser weighs: `prices` plus any objective weight (the carbon
        price on import). Bills and the page use `prices`, which stays money only."""
        out = self.prices(start, n, step_min)
        if self.carbon is None:
            return out
        weights, notes = self.carbon.weights_per_kwh(start, n, step_min)
        imp = [p + w for p, w in zip(out.import_per_kwh, weights, strict=True)]
        return SlotPrices(imp, out.export_per_kwh, out.fallback_slots, (*out.notes, *notes))

    def inject_signal(
        self,
        start: datetime,
        step_min: int,
        import_per_kwh: list[float],
        export_per_kwh: list[float] | None = None,
    ) -> None:
        """An aggregator's price series from `start`, one value per `step_min`."""
        step = timedelta(minutes=step_min)
        for signals, values in (
            (self._signals.imp, import_per_kwh),
            (self._signals.exp, export_per_kwh or []),
        ):
            signals.extend(
                Interval(start + i * step, start + (i + 1) * step, v) for i, v in enumerate(values)
            )
        self.version += 1

    def clear_signal(self, start: datetime, end: datetime) -> None:
        """Withdraw the signals inside [start, end) (a cancelled price event)."""
        for signals in (self._signals.imp, self._signals.exp):
            signals[:] = [iv for iv in signals if not (start <= iv.start and iv.end <= end)]
        self.version += 1

    def _base_price(self, direction: str, start: datetime, end: datetime) -> float | None:
        if direction == "import":
            return self.cfg.fixed_import_per_kwh
        return self.cfg.fixed_export_price_per_kwh

    def prices(self, start: datetime, n: int, step_min: int) -> SlotPrices:
        step = timedelta(minutes=step_min)
        imp: list[float] = []
        exp: list[float] = []
        fallback = {
            "import": self.cfg.fallback_import_per_kwh,
            "export": self.cfg.fallback_export_per_kwh,
        }
        missing: dict[str, list[datetime]] = {"import": [], "export": []}
        for i in range(n):
            a, b = start + i * step, start + (i + 1) * step
            for direction, out, signals in (
                ("import", imp, self._signals.imp),
                ("export", exp, self._signals.exp),
            ):
                value = price_in(signals, a, b)
                if value is None:
                    value = self._base_price(direction, a, b)
                if value is None:
                    missing[direction].append(a)
                    value = fallback[direction]
                out.append(value)
        notes = [
            f"tariff.{direction}: no price for {len(when)} slots from "
            f"{when[0].astimezone(self.zone):%Y-%m-%d %H:%M}; fallback {fallback[direction]:g} "
            f"{self.cfg.currency}/kWh used"
            for direction, when in missing.items()
            if when
        ]
        return SlotPrices(imp, exp, len(missing["import"]) + len(missing["export"]), tuple(notes))


class TouTariff(Tariff):
    def _base_price(self, direction: str, start: datetime, end: datetime) -> float | None:
        # Bands change on whole minutes; the slot's start decides (slots are 15/30 min).
        found = tou_price_at(self.cfg.bands, start.astimezone(self.zone))
        if found is None:
            return None
        imp, exp = found
        if direction == "import":
            return imp
        if self.cfg.fixed_export_pence_per_kwh is not None:  # a separate export contract
            return self.cfg.fixed_export_price_per_kwh
        return exp if exp is not None else self.cfg.fixed_export_per_kwh
