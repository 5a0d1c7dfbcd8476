"""The charger's current limit: deciding it, sending it, and checking it is obeyed.

Sending uses a charging profile unless the quirk profile says the charger needs its vendor
fallback (a configuration key or a DataTransfer); a first refusal of the profile switches
to the fallback for good. Every profile expires (`validTo`, `ocpp.profile_validity_s`) so a
charger whose hems is gone falls back to its own default; a charger refusing a profile that
expires gets it once more without `validTo` and, if that is accepted, is marked "no expiry"
(`profile_expiry` False) and sent profiles without it from then on. Meter values then
judge the limit: `VIOLATIONS_TO_FLAG` readings above it (after the charger's allowed
delay) flag the charger as ignoring limits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from ocpp.exceptions import OCPPError

from hems.core.clock import Clock
from hems.devices.ocpp.config import ChargerConfig
from hems.devices.ocpp.events import ChargerEvent, LimitSent
from hems.devices.ocpp.faults import Faults
from hems.devices.ocpp.model import LimitDecision, MeterSample, decide_limit, followed
from hems.devices.ocpp.quirks import QuirkProfile
from hems.devices.ocpp.store import OcppStore
from hems.devices.ocpp.transactions import Transactions
from hems.errors import DeviceRejected, DeviceTimeout, DeviceUnreachable

log = structlog.get_logger(__name__)

# Consecutive MeterValues above the limit (after the allowed delay) before it is flagged.
VIOLATIONS_TO_FLAG = 2
_NOT_SUPPORTED = {"NotSupported", "NotImplemented"}


@dataclass(slots=True)
class LimitCommand:
    current_a: float
    phases: int
    dsr: bool
    issued_s: float  # clock.monotonic()
    check_after_s: float  # clock.monotonic() from which readings must obey
    command_pk: int | None = None
    outcome: bool | None = None


def response_delay_s(cfg: ChargerConfig, quirks: QuirkProfile, dsr: bool) -> float:
    """Worst-case delay before a start or rate change takes effect [s].

    GB Smart Charge Points Regulations 2021: the charger itself randomises up to 600 s
    unless the change is demand-side response. hems adds no delay; the planner uses this.
    """
    if dsr:
        return 0.0
    if cfg.randomised_delay_max_s is not None:
        return cfg.randomised_delay_max_s
    return quirks.randomised_delay_max_s


class Limits:
    """The last limit and what sending and judging it has taught us about the charger.

    `faults` counts unanswered calls; `transactions` gives the running transaction (a
    TxProfile names it); every limit sent is recorded in `store` and told to `emit`.
    """

    def __init__(
        self,
        cfg: ChargerConfig,
        quirks: QuirkProfile,
        clock: Clock,
        store: OcppStore,
        faults: Faults,
        transactions: Transactions,
        emit: Callable[[ChargerEvent], None],
        profile_validity_s: float = 300.0,
    ) -> None:
        self._cfg = cfg
        self._validity_s = profile_validity_s
        self._clock = clock
        self._store = store
        self._faults = faults
        self._transactions = transactions
        self._emit = emit
        self.limit: LimitCommand | None = None
        self.active_phases = cfg.phases
        self.profile_unsupported = quirks.limit.method == "fallback"
        self.ignores_limits = False
        self._violations = 0
        self._last_switch_s: float | None = None
        # False once the charger refused a profile with validTo and took it without.
        self.profile_expiry = True
        self._expiry_settled = False  # the charger has told us whether it takes validTo

    @property
    def method(self) -> str:
        """How the next limit will be sent, for the command log."""
        return "charging_profile" if not self.profile_unsupported else "fallback"

    async def set(
        self, link: Any, quirks: QuirkProfile, current_a: float, phases: int, dsr: bool
    ) -> None:
        """`OcppCharger.set_limit`; `link` is None while the charger cannot be commanded."""
        cfg = self._cfg
        now_s = self._clock.monotonic()
        decision = self._decide(current_a, phases, quirks, now_s)
        if link is None:
            # Remember it: it is sent as soon as the charger boots again.
            self.limit = LimitCommand(decision.current_a, decision.phases, dsr, now_s, now_s)
            raise DeviceUnreachable(cfg.id, "not connected")
        try:
            method, status = await self._send(link, quirks, decision, dsr)
        except TimeoutError:
            self._faults.call_timed_out("SetChargingProfile")
            await self._record(decision, dsr, self.method, "Timeout")
            raise DeviceTimeout(cfg.id, "limit not answered") from None
        self._faults.call_answered()
        cmd = LimitCommand(
            decision.current_a,
            decision.phases,
            dsr,
            now_s,
            now_s + response_delay_s(cfg, quirks, dsr),
        )
        cmd.command_pk = await self._record(decision, dsr, method, status)
        # Accepted: the control loop's refresh, kept in ocpp_commands; debug in the log.
        (log.debug if status == "Accepted" else log.info)(
            "ocpp limit sent",
            charger=cfg.id,
            current_a=decision.current_a,
            phases=decision.phases,
            dsr=dsr,
            method=method,
            status=status,
        )
        self._emit(
            LimitSent(
                device_id=cfg.id,
                identity=cfg.cp_identity,
                at=self._clock.now(),
                current_a=decision.current_a,
                phases=decision.phases,
                dsr=dsr,
                method=method,
                status=status,
            )
        )
        if status not in ("Accepted", "RebootRequired"):
            raise DeviceRejected(cfg.id, f"limit {decision.current_a:g} A: {status}")
        if cmd.phases != self.active_phases:
            self._last_switch_s = now_s
            self.active_phases = cmd.phases
        self.limit = cmd
        self._violations = 0

    async def _record(
        self, decision: LimitDecision, dsr: bool, method: str, status: str
    ) -> int | None:
        return await self._store.command(
            self._cfg.cp_identity,
            self._clock.now(),
            decision.current_a,
            decision.phases,
            dsr,
            method,
            status,
            decision.note,
        )

    def _decide(
        self, current_a: float, phases: int, quirks: QuirkProfile, now_s: float
    ) -> LimitDecision:
        cfg = self._cfg
        since = None if self._last_switch_s is None else now_s - self._last_switch_s
        decision = decide_limit(
            current_a,
            phases,
            min_current_a=cfg.min_current_a,
            max_current_a=cfg.max_current_a,
            max_phases=cfg.phases,
            active_phases=self.active_phases,
            phase_switching=quirks.limit.phase_switching,
            since_last_switch_s=since,
            cooldown_s=cfg.phase_switch_cooldown_s,
        )
        if decision.note:
            log.info(
                "ocpp limit adjusted",
                charger=cfg.id,
                requested_a=current_a,
                requested_phases=phases,
                note=decision.note,
            )
        return decision

    async def _send(
        self, link: Any, quirks: QuirkProfile, decision: LimitDecision, dsr: bool
    ) -> tuple[str, str]:
        """Send the limit; (method, the charger's status). TimeoutError passes through."""
        current_a, phases = decision.current_a, decision.phases
        try:
            if dsr and quirks.dsr_signal == "data_transfer":
                await link.signal_dsr(quirks.dsr_vendor_id, True)
            if not self.profile_unsupported:
                status = await self._profile(link, quirks, decision, dsr)
                if status == "Accepted" or quirks.limit.fallback is None:
                    return "charging_profile", status
                # First refusal: remember it and use the quirk path from now on.
                log.warning(
                    "ocpp charging profile refused, using fallback",
                    charger=self._cfg.id,
                    status=status,
                    fallback=quirks.limit.fallback.method,
                )
                self.profile_unsupported = True
            fb = quirks.limit.fallback
            if fb is None:
                return "charging_profile", "NotSupported"
            value = current_a if fb.unit == "A" else current_a * self._cfg.voltage_v * phases
            status = await link.set_fallback(fb, limit=value, phases=phases)
            return fb.method, status
        except OCPPError as exc:
            raise DeviceRejected(self._cfg.id, f"limit refused: {exc}") from None

    async def _profile(
        self, link: Any, quirks: QuirkProfile, decision: LimitDecision, dsr: bool
    ) -> str:
        q = quirks.limit
        phases = decision.phases
        limit = decision.current_a
        if q.unit != "A":
            limit = decision.current_a * self._cfg.voltage_v * phases
        tx = self._transactions.current
        transaction_id = None if tx is None else tx.transaction_id
        purpose = q.profile_purpose
        if purpose == "tx" and transaction_id is None:
            purpose = "tx_default"  # a TxProfile needs a running transaction
        now = self._clock.now()

        def send(valid_to: str | None) -> Awaitable[object]:
            return link.set_profile(
                limit=limit,
                unit=q.unit,
                phases=phases,
                purpose=purpose,
                stack_level=q.stack_level,
                connector_id=self._cfg.connector_id,
                transaction_id=transaction_id,
                dsr=dsr,
                start_iso=_iso(now),
                valid_to_iso=valid_to,
            )

        if not self.profile_expiry:
            return await _status(send(None))
        # No chargingSchedule.duration: a Relative TxDefault schedule restarts with each
        # transaction, so a duration would count from the car's plug-in, not from now.
        valid_to = _iso(now + timedelta(seconds=self._validity_s))
        try:
            status = await _status(send(valid_to))
        except OCPPError as exc:
            if self._expiry_settled:
                raise
            return await self._without_expiry(send, exc.code, exc)
        if status in ("Accepted", "NotSupported") or self._expiry_settled:
            self._expiry_settled = self._expiry_settled or status == "Accepted"
            return status
        return await self._without_expiry(send, status, None)

    async def _without_expiry(
        self,
        send: Callable[[str | None], Awaitable[object]],
        refusal: str,
        error: OCPPError | None,
    ) -> str:
        """The first profile with validTo was refused: try it once without. Accepted: the
        charger cannot take an expiring profile, so it keeps hems' last limit if hems stops
        (the control loop still refreshes it). Refused again: validTo was not the cause."""
        self._expiry_settled = True
        log.warning(
            "ocpp charging profile with validTo refused; retrying without it",
            charger=self._cfg.id,
            refusal=refusal,
        )
        status = await _status(send(None))
        if status != "Accepted":
            if error is not None:
                raise error
            return refusal
        self.profile_expiry = False
        log.error(
            "ocpp charger takes no profile expiry (validTo): if hems stops, it keeps the last "
            "limit until someone changes it; hems keeps refreshing it while running",
            charger=self._cfg.id,
        )
        return status

    def judge(self, sample: MeterSample, now_s: float) -> LimitCommand | None:
        """Judge the last limit against `sample`; the command when its outcome was just
        decided (followed, or ignored `VIOLATIONS_TO_FLAG` times in a row)."""
        cmd = self.limit
        if cmd is None or cmd.outcome is not None:
            return None
        if now_s < cmd.check_after_s:
            return None  # still inside the charger's own randomised delay
        measured_a = sample.max_phase_current_a
        verdict = followed(cmd.current_a, measured_a, self._cfg.follow_tolerance_a)
        if verdict is None:
            return None
        if verdict:
            cmd.outcome = True
            self._violations = 0
            if self.ignores_limits:
                log.info("ocpp charger follows limits again", charger=self._cfg.id)
                self.ignores_limits = False
        else:
            self._violations += 1
            if self._violations < VIOLATIONS_TO_FLAG:
                return None
            cmd.outcome = False
            if not self.ignores_limits:
                log.error(
                    "ocpp charger ignores its limit",
                    charger=self._cfg.id,
                    limit_a=cmd.current_a,
                    measured_a=measured_a,
                )
            self.ignores_limits = True
        return cmd


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _status(answer: Awaitable[object]) -> str:
    """The charger's status for a SetChargingProfile; "NotSupported" for a CallError saying
    smart charging is not there (other CallErrors pass through)."""
    try:
        return str(await answer)
    except OCPPError as exc:
        if exc.code in _NOT_SUPPORTED:
            return "NotSupported"
        raise
