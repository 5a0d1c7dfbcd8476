"""The `ev_sessions` and `ev_modes` tables (their only owner): one row per charger with a
car plugged in, and the owner's charging mode per charger."""

from __future__ import annotations

from hems.core.ev import EvSession
from hems.errors import HemsError
from hems.store.db import Database
from hems.store.timeseries import from_ms, to_ms


class EvSessionTable:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self) -> dict[str, EvSession]:
        """Every stored session by device id; a row that no longer validates is skipped."""
        rows = await self._db.fetchall(
            "SELECT device_id, plugged_at_ms, departure_ms, energy_wh, set_by, soc_pct,"
            " target_soc_pct FROM ev_sessions"
        )
        out: dict[str, EvSession] = {}
        for device_id, plugged_ms, departure_ms, energy_wh, set_by, soc, target in rows:
            try:
                out[device_id] = EvSession(
                    device_id,
                    from_ms(plugged_ms),
                    from_ms(departure_ms),
                    energy_wh,
                    set_by,
                    soc,
                    target,
                )
            except HemsError:
                continue
        return out

    async def save(self, session: EvSession, now_ms: int) -> None:
        await self._db.execute(
            "INSERT INTO ev_sessions(device_id, plugged_at_ms, departure_ms, energy_wh, set_by,"
            " soc_pct, target_soc_pct, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(device_id) DO UPDATE SET"
            " plugged_at_ms=excluded.plugged_at_ms, departure_ms=excluded.departure_ms,"
            " energy_wh=excluded.energy_wh, set_by=excluded.set_by, soc_pct=excluded.soc_pct,"
            " target_soc_pct=excluded.target_soc_pct, updated_ms=excluded.updated_ms",
            (
                session.device_id,
                to_ms(session.plugged_at),
                to_ms(session.departure),
                session.energy_wh,
                session.set_by,
                session.soc_pct,
                session.target_soc_pct,
                now_ms,
            ),
        )

    async def delete(self, device_id: str) -> None:
        await self._db.execute("DELETE FROM ev_sessions WHERE device_id = ?", (device_id,))

    async def modes(self) -> dict[str, str]:
        rows = await self._db.fetchall("SELECT device_id, mode FROM ev_modes")
        return {str(d): str(m) for d, m in rows}

    async def save_mode(self, device_id: str, mode: str | None, now_ms: int) -> None:
        if mode is None:
            await self._db.execute("DELETE FROM ev_modes WHERE device_id = ?", (device_id,))
            return
        await self._db.execute(
            "INSERT INTO ev_modes(device_id, mode, updated_ms) VALUES (?, ?, ?)"
            " ON CONFLICT(device_id) DO UPDATE SET mode=excluded.mode,"
            " updated_ms=excluded.updated_ms",
            (device_id, mode, now_ms),
        )
