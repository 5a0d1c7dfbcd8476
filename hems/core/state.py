"""SiteState: the latest value of every (device, quantity), with its age and a stale flag."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading, Role

Listener = Callable[[list[Reading]], None]


@dataclass(frozen=True, slots=True)
class Latest:
    reading: Reading
    age_s: float
    stale: bool

    @property
    def value(self) -> float:
        return self.reading.value


@dataclass(slots=True)
class _Slot:
    reading: Reading
    at_s: float  # clock.monotonic() when it arrived


class SiteState:
    """Holds the latest readings. Staleness comes from age, so it is never a lie.

    `stale_after_s` is the default; a device may have its own (a P1 meter every 1 s, a Glow
    CAD every 10 s, an OCPP charger every MeterValueSampleInterval).
    Listeners (the store's batcher, the uplink) get every published batch, synchronously;
    they must only enqueue.
    """

    def __init__(self, clock: Clock, stale_after_s: float = 30.0) -> None:
        self._clock = clock
        self._default_stale_s = stale_after_s
        self._stale_s: dict[str, float] = {}
        self._roles: dict[str, Role] = {}
        self._slots: dict[tuple[str, Quantity], _Slot] = {}
        self._down: dict[str, str] = {}
        self._listeners: list[Listener] = []

    # -- registration -------------------------------------------------------------------
    def register_device(
        self, device_id: str, role: Role, stale_after_s: float | None = None
    ) -> None:
        self._roles[device_id] = role
        if stale_after_s is not None:
            self._stale_s[device_id] = stale_after_s

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def devices(self) -> dict[str, Role]:
        return dict(self._roles)

    # -- input --------------------------------------------------------------------------
    def publish(self, readings: Iterable[Reading]) -> None:
        batch = list(readings)
        now_s = self._clock.monotonic()
        for r in batch:
            self._slots[(r.device_id, r.quantity)] = _Slot(r, now_s)
            self._down.pop(r.device_id, None)
        for listener in self._listeners:
            listener(batch)

    def mark_down(self, device_id: str, reason: str) -> None:
        """A device's adapter gave up on it for now: every value of it is stale at once."""
        self._down[device_id] = reason

    # -- output -------------------------------------------------------------------------
    def latest(self, device_id: str, quantity: Quantity) -> Latest | None:
        slot = self._slots.get((device_id, quantity))
        if slot is None:
            return None
        age_s = self._clock.monotonic() - slot.at_s
        limit_s = self._stale_s.get(device_id, self._default_stale_s)
        stale = age_s > limit_s or device_id in self._down
        return Latest(slot.reading, age_s, stale)

    def fresh_value(self, device_id: str, quantity: Quantity) -> float | None:
        latest = self.latest(device_id, quantity)
        return None if latest is None or latest.stale else latest.value

    def is_stale(self, device_id: str) -> bool:
        """A device is stale when it is down or none of its readings is fresh."""
        if device_id in self._down:
            return True
        ages = [self.latest(d, q) for (d, q) in self._slots if d == device_id]
        return not any(a is not None and not a.stale for a in ages)

    def down_reason(self, device_id: str) -> str | None:
        return self._down.get(device_id)

    def role_total(self, role: Role, quantity: Quantity = Quantity.POWER_W) -> float | None:
        """Sum of fresh values over devices with `role`; None if any such device is stale."""
        total = 0.0
        found = False
        for device_id, r in self._roles.items():
            if r is not role:
                continue
            value = self.fresh_value(device_id, quantity)
            if value is None:
                return None
            total += value
            found = True
        return total if found else None

    def snapshot(self) -> list[dict[str, object]]:
        """Every latest value as plain data, for the web page and the API."""
        out: list[dict[str, object]] = []
        for device_id, quantity in sorted(self._slots):
            latest = self.latest(device_id, quantity)
            assert latest is not None
            out.append(
                {
                    "device_id": device_id,
                    "role": str(self._roles.get(device_id, "")),
                    "quantity": str(quantity),
                    "unit": quantity.unit,
                    "value": latest.value,
                    "at": latest.reading.at.isoformat(),
                    "age_s": round(latest.age_s, 1),
                    "stale": latest.stale,
                }
            )
        return out

    def now(self) -> datetime:
        return self._clock.now()
