"""What an `OcppCharger` tells its listener, as typed values.

Every event names the charger twice: `device_id` (the hems id the planner and the control
loop use) and `identity` (the OCPP charge point id, for logs and the commissioning tool),
so a consumer needs no identity → device map. Listeners are called synchronously from the
charger's receive loop: they must be quick and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from hems.core.capabilities import EvState


@dataclass(frozen=True, slots=True, kw_only=True)
class _ChargerEventBase:
    device_id: str
    identity: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerBooted(_ChargerEventBase):
    """BootNotification: accepted, or held as pending until the owner accepts it."""

    version: str  # "1.6" | "2.0.1"
    vendor: str
    model: str
    serial: str
    firmware: str
    pending: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerStatusChanged(_ChargerEventBase):
    """The connector's OCPP status changed; `state` is what it means for hems."""

    status: str
    error_code: str | None
    state: EvState


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerOffline(_ChargerEventBase):
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerFaulted(_ChargerEventBase):
    """hems shows the charger faulted (unanswered calls, charger fault, reconnect loop)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitSent(_ChargerEventBase):
    """A limit was sent and answered (`status` is the charger's answer, maybe a refusal)."""

    current_a: float
    phases: int
    dsr: bool
    method: str  # "charging_profile" or the quirk fallback's method
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitOutcome(_ChargerEventBase):
    """Meter values judged the last limit: followed or ignored."""

    limit_a: float
    followed: bool
    measured_a: float  # highest phase current [A]


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionStarted(_ChargerEventBase):
    transaction_id: str
    meter_start_wh: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionStopped(_ChargerEventBase):
    transaction_id: str
    session_energy_wh: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterUpdated(_ChargerEventBase):
    """MeterValues merged into the charger's latest sample (values are the merged ones)."""

    power_w: float | None
    current_a: Mapping[str, float]  # phase ("L1".."L3", "" when unphased) → A
    energy_wh: float | None  # the charger's register
    session_energy_wh: float


ChargerEvent = (
    ChargerBooted
    | ChargerStatusChanged
    | ChargerOffline
    | ChargerFaulted
    | LimitSent
    | LimitOutcome
    | TransactionStarted
    | TransactionStopped
    | MeterUpdated
)
ChargerListener = Callable[[ChargerEvent], None]
