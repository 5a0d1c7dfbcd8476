"""Who may use the local page and API: the owner's password, sessions, API tokens, the
login limiter and the security log. Owner of the `web_*` tables (migration 0011).

There is no default password. Until the owner sets one, the daemon holds a one-time setup
code (printed in its log and by `hems admin setup-code`); the first visit asks for it and
for the new password. Passwords are hashed with scrypt (RFC 7914, from the standard
library: no native dependency on the Pi); sessions and tokens are random 256-bit values
stored only as SHA-256 hashes, so a copy of the database logs nobody in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from hems.core.clock import Clock
from hems.errors import HemsError
from hems.store.db import Database
from hems.store.timeseries import from_ms, to_ms

# scrypt cost: n=2^15, r=8 uses 32 MiB and took 0.08 s per hash on the 2-core x86 dev box
# (a Pi 4 is several times slower; it runs off the event loop); enough against
# offline guessing for a home gateway, bounded for a login (and logins are rate-limited).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD_CHARS = 10
LOG_KEEP = 5000  # security log rows kept
MAX_PASSWORD_CHARS = 256

SecurityKind = Literal[
    "setup",
    "login",
    "login-failed",
    "lockout",
    "logout",
    "password-changed",
    "token-created",
    "token-revoked",
    "refused",
    "config-changed",
]


def hash_password(password: str) -> str:
    check_password_rules(password)
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt" or len(password) > MAX_PASSWORD_CHARS:
            return False
        got = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise HemsError(f"password: must be {MIN_PASSWORD_CHARS}..{MAX_PASSWORD_CHARS} characters")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    client: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    can_write: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class SecurityEntry:
    at: datetime
    kind: str
    client: str
    detail: str


class AuthStore:
    """The web_* tables. Every method is one transaction."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        session_idle: timedelta = timedelta(days=7),
        session_max: timedelta = timedelta(days=30),
    ) -> None:
        self._db = db
        self._clock = clock
        self._idle = session_idle
        self._max = session_max

    def _now_ms(self) -> int:
        return to_ms(self._clock.now())

    # -- the owner's password and the setup code -------------------------------------------
    async def has_password(self) -> bool:
        return await self._db.fetchone("SELECT 1 FROM web_owner") is not None

    async def setup_code(self) -> str | None:
        """The one-time setup code while no password is set (made on first call)."""
        if await self.has_password():
            return None
        row = await self._db.fetchone("SELECT code FROM web_setup")
        if row is not None:
            return str(row[0])
        code = "-".join(secrets.token_hex(2).upper() for _ in range(4))  # 64 bits
        await self._db.execute(
            "INSERT OR IGNORE INTO web_setup(id, code, created_ms) VALUES (1, ?, ?)",
            (code, self._now_ms()),
        )
        row = await self._db.fetchone("SELECT code FROM web_setup")
        assert row is not None
        return str(row[0])

    async def complete_setup(self, code: str, password: str, client: str) -> None:
        """Set the first password with the setup code. Raises HemsError naming the field."""
        expected = await self.setup_code()
        if expected is None:
            raise HemsError("setup: already done; log in instead")
        if not hmac.compare_digest(code.strip().upper().encode(), expected.encode()):
            await self.log("refused", client, "wrong setup code")
            raise HemsError("code: not the setup code (see the log or `hems admin setup-code`)")
        await self.set_password(password, client, kind="setup")

    async def set_password(
        self, password: str, client: str, kind: SecurityKind = "password-changed"
    ) -> None:
        # scrypt takes ~0.08 s here (more on a Pi): off the event loop, so control keeps going.
        hashed = await asyncio.to_thread(hash_password, password)
        now = self._now_ms()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO web_owner(id, password_hash, updated_ms) VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET password_hash=excluded.password_hash, "
                "updated_ms=excluded.updated_ms",
                (hashed, now),
            )
            conn.execute("DELETE FROM web_setup")
            # A new password ends every session: whoever knew the old one is logged out.
            conn.execute("DELETE FROM web_sessions")
            conn.execute(
                "INSERT INTO web_security_log(at_ms, kind, client, detail) VALUES (?, ?, ?, ?)",
                (now, kind, client, "owner password set"),
            )

        await self._db.call(run)

    async def check_password(self, password: str) -> bool:
        row = await self._db.fetchone("SELECT password_hash FROM web_owner")
        if row is None:
            return False
        return await asyncio.to_thread(verify_password, password, str(row[0]))

    # -- sessions ------------------------------------------------------------------------
    async def create_session(self, client: str) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._now_ms()
        expires = now + int(self._idle.total_seconds() * 1000)
        await self._db.execute(
            "INSERT INTO web_sessions(token_sha256, csrf, client, created_ms, last_seen_ms,"
            " expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (_sha256(token), csrf, client, now, now, expires),
        )
        return token, Session(csrf, client, from_ms(expires))

    async def session(self, token: str) -> Session | None:
        """The live session of a cookie value (its idle expiry moved on), else None."""
        if not token or len(token) > 100:
            return None
        key, now = _sha256(token), self._now_ms()
        row = await self._db.fetchone(
            "SELECT csrf, client, created_ms, expires_ms FROM web_sessions WHERE token_sha256=?",
            (key,),
        )
        if row is None:
            return None
        csrf, client, created_ms, expires_ms = row
        if expires_ms <= now:
            await self.end_session(token)
            return None
        idle_ms = int(self._idle.total_seconds() * 1000)
        max_ms = created_ms + int(self._max.total_seconds() * 1000)
        new_expiry = min(now + idle_ms, max_ms)
        if new_expiry - expires_ms > 60_000:  # touch at most once a minute (SD card)
            await self._db.execute(
                "UPDATE web_sessions SET last_seen_ms=?, expires_ms=? WHERE token_sha256=?",
                (now, new_expiry, key),
            )
            expires_ms = new_expiry
        return Session(str(csrf), str(client), from_ms(expires_ms))

    async def end_session(self, token: str) -> None:
        await self._db.execute("DELETE FROM web_sessions WHERE token_sha256=?", (_sha256(token),))

    async def prune_sessions(self) -> int:
        return await self._db.execute(
            "DELETE FROM web_sessions WHERE expires_ms <= ?", (self._now_ms(),)
        )

    # -- API tokens ----------------------------------------------------------------------
    async def create_token(self, name: str, can_write: bool) -> str:
        """A new token (shown once). Raises HemsError if the name is taken or malformed."""
        if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
            raise HemsError("name: 1..64 letters, digits, '-', '_' or '.'")
        token = "hems_" + secrets.token_urlsafe(32)
        row = await self._db.fetchone("SELECT 1 FROM web_tokens WHERE name=?", (name,))
        if row is not None:
            raise HemsError(f"name: a token named {name!r} exists (revoke it first)")
        await self._db.execute(
            "INSERT INTO web_tokens(name, token_sha256, can_write, created_ms) VALUES (?,?,?,?)",
            (name, _sha256(token), int(can_write), self._now_ms()),
        )
        await self.log(
            "token-created", "cli", f"{name} ({'read-write' if can_write else 'read-only'})"
        )
        return token

    async def token(self, presented: str) -> Token | None:
        if not presented.startswith("hems_") or len(presented) > 100:
            return None
        row = await self._db.fetchone(
            "SELECT name, can_write, created_ms, last_used_ms, revoked_ms FROM web_tokens"
            " WHERE token_sha256=?",
            (_sha256(presented),),
        )
        if row is None or row[4] is not None:
            return None
        now = self._now_ms()
        if row[3] is None or now - row[3] > 3_600_000:  # last use, to the hour
            await self._db.execute(
                "UPDATE web_tokens SET last_used_ms=? WHERE name=?", (now, row[0])
            )
        return _token(row)

    async def tokens(self) -> list[Token]:
        rows = await self._db.fetchall(
            "SELECT name, can_write, created_ms, last_used_ms, revoked_ms FROM web_tokens"
            " ORDER BY created_ms"
        )
        return [_token(r) for r in rows]

    async def revoke_token(self, name: str) -> None:
        changed = await self._db.execute(
            "UPDATE web_tokens SET revoked_ms=? WHERE name=? AND revoked_ms IS NULL",
            (self._now_ms(), name),
        )
        if not changed:
            raise HemsError(f"name: no active token named {name!r}")
        await self.log("token-revoked", "cli", name)

    # -- the security log ----------------------------------------------------------------
    async def log(self, kind: SecurityKind, client: str, detail: str) -> None:
        """One entry; the log keeps its newest LOG_KEEP rows (a flood of refused requests
        cannot fill the SD card)."""
        now = self._now_ms()

        def run(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "INSERT INTO web_security_log(at_ms, kind, client, detail) VALUES (?, ?, ?, ?)",
                (now, kind, client[:64], detail[:200]),
            )
            if cur.lastrowid is not None and cur.lastrowid % 100 == 0:
                conn.execute(
                    "DELETE FROM web_security_log WHERE id <= ?", (cur.lastrowid - LOG_KEEP,)
                )

        await self._db.call(run)

    async def security_log(self, limit: int = 50) -> list[SecurityEntry]:
        rows = await self._db.fetchall(
            "SELECT at_ms, kind, client, detail FROM web_security_log"
            " ORDER BY at_ms DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [SecurityEntry(from_ms(r[0]), r[1], r[2], r[3]) for r in rows]


def _token(row: tuple[object, ...]) -> Token:
    name, can_write, created_ms, last_ms, revoked_ms = row
    return Token(
        str(name),
        bool(can_write),
        from_ms(int(created_ms)),  # type: ignore[call-overload]
        None if last_ms is None else from_ms(int(last_ms)),  # type: ignore[call-overload]
        None if revoked_ms is None else from_ms(int(revoked_ms)),  # type: ignore[call-overload]
    )


class LoginLimiter:
    """Failed logins per client: after `free` failures each further one locks the client out
    for `base_s`, doubling up to `max_s`; a success clears it. Bounded: the oldest clients
    are forgotten past `max_clients` (so a flood of addresses cannot grow memory)."""

    def __init__(
        self,
        clock: Clock,
        free: int = 5,
        base_s: float = 30.0,
        max_s: float = 3600.0,
        max_clients: int = 1000,
    ) -> None:
        self._clock = clock
        self._free, self._base_s, self._max_s = free, base_s, max_s
        self._max_clients = max_clients
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()  # failures, until

    def locked_for_s(self, client: str) -> float:
        """Seconds this client must still wait (0: may try)."""
        _failures, until = self._state.get(client, (0, -math.inf))
        return max(0.0, until - self._clock.monotonic())

    def failed(self, client: str) -> float:
        """Count a failure; the lockout it starts [s] (0 while under `free`)."""
        failures, _ = self._state.pop(client, (0, -math.inf))
        failures += 1
        lock_s = 0.0
        if failures > self._free:
            lock_s = min(self._max_s, self._base_s * 2 ** (failures - self._free - 1))
        self._state[client] = (failures, self._clock.monotonic() + lock_s)
        while len(self._state) > self._max_clients:
            self._state.popitem(last=False)
        return lock_s

    def succeeded(self, client: str) -> None:
        self._state.pop(client, None)


def same_origin(origin: str | None, fetch_site: str | None, scheme: str, host: str) -> bool:
    """Whether a state-changing request comes from our own page: `Sec-Fetch-Site` says
    same-origin (or none: typed by the user), else `Origin` equals our scheme://host. With
    neither header (an old browser, a script with a stolen cookie) the answer is no."""
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    if origin is None:
        return False
    return origin.lower() == f"{scheme}://{host}".lower()
