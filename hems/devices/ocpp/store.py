"""Persistence of chargers, transactions and commands (migration 0006_ocpp.sql).

Works without a database too (tests, `hems charger test`): then everything lives in memory
only and a daemon restart forgets running transactions.

Chargers and transaction starts and stops are committed at once; the command log, its
outcomes and a transaction's latest register are deferred to the store's next commit
(`Database.defer`): a kill -9 loses at most one batch of them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from datetime import datetime

import structlog

from hems.errors import StoreError
from hems.store.db import Database

log = structlog.get_logger(__name__)


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(slots=True)
class Transaction:
    transaction_id: str
    connector_id: int
    meter_start_wh: float
    started_ms: int
    id_tag: str = ""
    meter_last_wh: float | None = None


class OcppStore:
    def __init__(self, db: Database | None) -> None:
        self._db = db
        # The next ocpp_commands key: allocated here, so a deferred insert needs no answer.
        self._next_command_pk: int | None = None
        self._pk_lock = asyncio.Lock()

    async def _safe(self, what: str, coro: object) -> object:
        # Losing a bookkeeping row must not drop a charger's connection; say so once.
        try:
            return await coro  # type: ignore[misc]
        except (StoreError, sqlite3.Error) as exc:
            log.error("ocpp store write failed", what=what, error=str(exc))
            return None

    async def charger_status(self, identity: str) -> str | None:
        if self._db is None:
            return None
        row = await self._db.fetchone(
            "SELECT status FROM ocpp_chargers WHERE identity = ?", (identity,)
        )
        return None if row is None else str(row["status"])

    async def rejected(self) -> set[str]:
        if self._db is None:
            return set()
        rows = await self._db.fetchall(
            "SELECT identity FROM ocpp_chargers WHERE status = 'rejected'"
        )
        return {str(r["identity"]) for r in rows}

    async def pending(self) -> list[str]:
        if self._db is None:
            return []
        rows = await self._db.fetchall(
            "SELECT identity FROM ocpp_chargers WHERE status = 'pending' ORDER BY identity"
        )
        return [str(r["identity"]) for r in rows]

    async def seen(
        self, identity: str, status: str, at: datetime, version: str = "", boot: dict | None = None
    ) -> None:
        if self._db is None:
            return
        boot = boot or {}
        now_ms = to_ms(at)
        await self._safe(
            "charger",
            self._db.execute(
                "INSERT INTO ocpp_chargers(identity, status, ocpp_version, vendor, model, serial,"
                " firmware, first_seen_ms, last_seen_ms) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(identity) DO UPDATE SET status = excluded.status,"
                " ocpp_version = excluded.ocpp_version,"
                " vendor = CASE WHEN excluded.vendor = '' THEN vendor ELSE excluded.vendor END,"
                " model = CASE WHEN excluded.model = '' THEN model ELSE excluded.model END,"
                " serial = CASE WHEN excluded.serial = '' THEN serial ELSE excluded.serial END,"
                " firmware = CASE WHEN excluded.firmware = '' THEN firmware"
                " ELSE excluded.firmware END, last_seen_ms = excluded.last_seen_ms",
                (
                    identity,
                    status,
                    version,
                    boot.get("vendor", ""),
                    boot.get("model", ""),
                    boot.get("serial", ""),
                    boot.get("firmware", ""),
                    now_ms,
                    now_ms,
                ),
            ),
        )

    async def open_transaction(self, identity: str) -> Transaction | None:
        if self._db is None:
            return None
        row = await self._db.fetchone(
            "SELECT * FROM ocpp_transactions WHERE identity = ? AND stopped_ms IS NULL"
            " ORDER BY started_ms DESC LIMIT 1",
            (identity,),
        )
        if row is None:
            return None
        return Transaction(
            transaction_id=str(row["transaction_id"]),
            connector_id=int(row["connector_id"]),
            meter_start_wh=float(row["meter_start_wh"]),
            started_ms=int(row["started_ms"]),
            id_tag=str(row["id_tag"]),
            meter_last_wh=row["meter_last_wh"],
        )

    async def next_transaction_id(self, floor: int) -> int:
        """1.6 transaction ids are integers the CSMS hands out: never reuse one."""
        if self._db is None:
            return floor
        row = await self._db.fetchone(
            "SELECT MAX(CAST(transaction_id AS INTEGER)) AS m FROM ocpp_transactions"
            " WHERE transaction_id GLOB '[0-9]*'"
        )
        top = row["m"] if row is not None and row["m"] is not None else 0
        return max(floor, int(top) + 1)

    async def start_transaction(self, identity: str, tx: Transaction) -> None:
        if self._db is None:
            return
        await self._safe(
            "transaction start",
            self._db.execute(
                "INSERT OR IGNORE INTO ocpp_transactions(identity, transaction_id, connector_id,"
                " id_tag, started_ms, meter_start_wh) VALUES (?,?,?,?,?,?)",
                (
                    identity,
                    tx.transaction_id,
                    tx.connector_id,
                    tx.id_tag,
                    tx.started_ms,
                    tx.meter_start_wh,
                ),
            ),
        )

    async def update_meter(self, identity: str, transaction_id: str, register_wh: float) -> None:
        if self._db is None:
            return
        self._db.defer(
            "UPDATE ocpp_transactions SET meter_last_wh = ?"
            " WHERE identity = ? AND transaction_id = ?",
            (register_wh, identity, transaction_id),
        )

    async def stop_transaction(
        self,
        identity: str,
        transaction_id: str,
        at: datetime,
        meter_stop_wh: float | None,
        reason: str,
    ) -> None:
        if self._db is None:
            return
        await self._safe(
            "transaction stop",
            self._db.execute(
                "UPDATE ocpp_transactions SET stopped_ms = ?, meter_stop_wh = ?, stop_reason = ?"
                " WHERE identity = ? AND transaction_id = ?",
                (to_ms(at), meter_stop_wh, reason, identity, transaction_id),
            ),
        )

    async def command(
        self,
        identity: str,
        at: datetime,
        current_a: float,
        phases: int,
        dsr: bool,
        method: str,
        status: str,
        note: str,
    ) -> int | None:
        if self._db is None:
            return None
        db = self._db
        async with self._pk_lock:
            if self._next_command_pk is None:
                row = await self._safe(
                    "command", db.fetchone("SELECT MAX(command_pk) FROM ocpp_commands")
                )
                if row is None:
                    return None
                self._next_command_pk = int(row[0] or 0) + 1  # type: ignore[index]
            pk = self._next_command_pk
            self._next_command_pk += 1
        db.defer(
            "INSERT INTO ocpp_commands(command_pk, identity, at_ms, current_a, phases, dsr,"
            " method, status, note) VALUES (?,?,?,?,?,?,?,?,?)",
            (pk, identity, to_ms(at), current_a, phases, int(dsr), method, status, note),
        )
        return pk

    async def command_followed(self, command_pk: int, followed: bool) -> None:
        if self._db is None:
            return
        self._db.defer(
            "UPDATE ocpp_commands SET followed = ? WHERE command_pk = ?",
            (int(followed), command_pk),
        )
