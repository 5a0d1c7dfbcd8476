"""The page's security store on a real SQLite file: hashes, the limiter, a bounded log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hems.core.clock import ManualClock
from hems.errors import HemsError
from hems.store.db import Database
from hems.web import auth
from hems.web.auth import AuthStore, LoginLimiter, hash_password, same_origin, verify_password

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def test_passwords_are_salted_scrypt_and_checked_in_constant_time() -> None:
    a, b = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert a != b and a.startswith("scrypt$32768$8$1$")  # a fresh salt each time
    assert verify_password("correct horse battery", a)
    assert not verify_password("correct horse batterz", a)
    assert not verify_password("x", "not-a-hash") and not verify_password("x", "scrypt$1$2")
    with pytest.raises(HemsError, match=r"password: must be 10\.\.256 characters"):
        hash_password("short")


async def test_the_limiter_grows_the_lockout_and_forgets_on_success() -> None:
    clock = ManualClock(T0)
    limiter = LoginLimiter(clock, free=2, base_s=30, max_s=100, max_clients=3)
    assert [limiter.failed("a") for _ in range(5)] == [0, 0, 30, 60, 100]
    assert limiter.locked_for_s("a") == 100
    await clock.advance(100)
    assert limiter.locked_for_s("a") == 0
    limiter.succeeded("a")
    assert limiter.failed("a") == 0  # a success starts the count again
    for client in ("b", "c", "d"):  # bounded: the oldest client is forgotten
        limiter.failed(client)
    assert limiter._state.keys() == {"b", "c", "d"}


@pytest.mark.parametrize(
    ("origin", "fetch_site", "ok"),
    [
        (None, "same-origin", True),
        (None, "none", True),
        (None, "same-site", False),  # another port on the same host is another origin
        (None, "cross-site", False),
        ("http://127.0.0.1:8080", None, True),
        ("http://127.0.0.1:9999", None, False),
        ("https://127.0.0.1:8080", None, False),
        (None, None, False),  # neither header: refused
    ],
)
def test_same_origin(origin: str | None, fetch_site: str | None, ok: bool) -> None:
    assert same_origin(origin, fetch_site, "http", "127.0.0.1:8080") is ok


async def test_the_security_log_keeps_only_its_newest_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "LOG_KEEP", 150)
    db = await Database.open(tmp_path / "hems.db")
    try:
        store = AuthStore(db, ManualClock(T0))
        for i in range(400):
            await store.log("refused", "10.0.0.9", f"flood {i}")
        (count,) = await db.fetchone("SELECT count(*) FROM web_security_log")  # type: ignore[misc]
        assert 150 <= count < 250  # pruned every 100 rows to the newest 150
        newest = await store.security_log(1)
        assert newest[0].detail == "flood 399"
    finally:
        await db.close()
