"""The charger's running transaction and the energy of the last finished session.

Version-neutral: the 1.6 and 2.0.1 links (v16.py, v201.py) translate their messages into
`begin`, `join`, `meter` and `stop`. Every change is stored, so a daemon restart resumes a
running session instead of counting it from the charger's lifetime register.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from hems.core.clock import Clock
from hems.devices.ocpp.events import ChargerEvent, TransactionStarted, TransactionStopped
from hems.devices.ocpp.model import session_energy_wh
from hems.devices.ocpp.store import OcppStore, Transaction, to_ms

log = structlog.get_logger(__name__)


class Transactions:
    def __init__(
        self,
        device_id: str,
        identity: str,
        store: OcppStore,
        clock: Clock,
        emit: Callable[[ChargerEvent], None],
    ) -> None:
        self._device_id = device_id
        self._identity = identity
        self._store = store
        self._clock = clock
        self._emit = emit
        self.current: Transaction | None = None
        self.last_session_wh = 0.0
        self._last_id = 0

    def session_energy_wh(self) -> float:
        """The running session's energy, else the last finished one's [Wh]."""
        tx = self.current
        if tx is None:
            return self.last_session_wh
        value = session_energy_wh(tx.meter_last_wh, tx.meter_start_wh)
        return value if value is not None else 0.0

    async def resume(self) -> None:
        """After a boot: take up the stored open transaction unless one is running."""
        if self.current is None:
            self.current = await self._store.open_transaction(self._identity)

    async def join(self, transaction_id: str) -> bool:
        """Take up `transaction_id` if it is the stored open one (a daemon restart)."""
        known = await self._store.open_transaction(self._identity)
        if known is not None and known.transaction_id == transaction_id:
            self.current = known
            return True
        return False

    def joined_late(self, transaction_id: str, meter_start_wh: float | None) -> None:
        log.warning(
            "ocpp transaction joined late, meter start assumed",
            charger=self._device_id,
            transaction_id=transaction_id,
            meter_start_wh=meter_start_wh,
        )

    async def new_id(self) -> int:
        """A fresh transaction id for 1.6, where the central system chooses it."""
        # Seconds since the epoch as a floor: unique across restarts even without a database.
        floor = max(int(self._clock.now().timestamp()), self._last_id + 1)
        tx_id = await self._store.next_transaction_id(floor)
        self._last_id = tx_id
        return tx_id

    async def begin(
        self, transaction_id: str, connector_id: int, meter_start_wh: float, id_tag: str = ""
    ) -> None:
        tx = Transaction(
            transaction_id, connector_id, meter_start_wh, to_ms(self._clock.now()), id_tag
        )
        if self.current is not None and self.current.transaction_id != tx.transaction_id:
            await self._store.stop_transaction(
                self._identity,
                self.current.transaction_id,
                self._clock.now(),
                None,
                "superseded",
            )
        tx.meter_last_wh = tx.meter_start_wh
        self.current = tx
        await self._store.start_transaction(self._identity, tx)
        log.info(
            "ocpp transaction started",
            charger=self._device_id,
            transaction_id=tx.transaction_id,
            meter_start_wh=tx.meter_start_wh,
        )
        self._emit(
            TransactionStarted(
                device_id=self._device_id,
                identity=self._identity,
                at=self._clock.now(),
                transaction_id=tx.transaction_id,
                meter_start_wh=tx.meter_start_wh,
            )
        )

    async def meter(self, energy_wh: float | None, transaction_id: str | None) -> None:
        """A register reading: it counts for the running transaction unless it names
        another one."""
        tx = self.current
        if (
            tx is not None
            and energy_wh is not None
            and (transaction_id is None or transaction_id == tx.transaction_id)
        ):
            tx.meter_last_wh = energy_wh
            await self._store.update_meter(self._identity, tx.transaction_id, energy_wh)

    async def stop(self, transaction_id: str, meter_stop_wh: float | None, reason: str) -> None:
        tx = self.current
        if tx is not None and tx.transaction_id == transaction_id:
            if meter_stop_wh is not None:
                tx.meter_last_wh = meter_stop_wh
            self.last_session_wh = self.session_energy_wh()
            self.current = None
        await self._store.stop_transaction(
            self._identity, transaction_id, self._clock.now(), meter_stop_wh, reason
        )
        log.info(
            "ocpp transaction stopped",
            charger=self._device_id,
            transaction_id=transaction_id,
            session_energy_wh=self.last_session_wh,
            reason=reason,
        )
        self._emit(
            TransactionStopped(
                device_id=self._device_id,
                identity=self._identity,
                at=self._clock.now(),
                transaction_id=transaction_id,
                session_energy_wh=self.last_session_wh,
            )
        )
