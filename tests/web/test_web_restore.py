"""Restoring a backup from the installer's page, over HTTP with a logged-in session and
real files: download, change things, upload the backup, review, confirm, restart, and the
reopened store holds the backed-up rows; bad uploads are refused naming the reason."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx

from hems.core import ManualClock, SiteState
from hems.store.db import Database, sibling
from hems.store.timeseries import ReadingStore
from hems.web import WebServer, installer
from hems.web.auth import AuthStore, LoginLimiter
from tests.store.test_store_restore import corrupt
from tests.testlib import OWNER_PASSWORD
from tests.web.test_web_installer import CONFIG, T0


async def serve(
    tmp_path: Path, restarts: list[str], max_upload_bytes: int = 200 * 1024 * 1024
) -> tuple[WebServer, Database, Path]:
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "var" / "hems.db")
    auth = AuthStore(db, clock)
    await auth.set_password(OWNER_PASSWORD, "test")
    web = WebServer(
        "127.0.0.1", 0, SiteState(clock), clock, ReadingStore(db, clock), "Test home",
        auth=auth, limiter=LoginLimiter(clock),
    )  # fmt: skip
    path = tmp_path / "etc" / "hems.yaml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    installer.register(
        web, path, restart=lambda: restarts.append("restart"), db=db, clock=clock,
        max_upload_bytes=max_upload_bytes,
    )  # fmt: skip
    await web.start()
    return web, db, path


async def logged_in(base: str) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient(base_url=base, headers={"Origin": base})
    await client.post("/login", data={"password": OWNER_PASSWORD})
    page = await client.get("/installer/restore")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text
    return client, _field(page.text, "csrf")


def _field(html: str, name: str) -> str:
    return html.split(f'name="{name}" value="', 1)[1].split('"', 1)[0]


async def upload(client: httpx.AsyncClient, csrf: str, content: bytes) -> httpx.Response:
    # httpx sends the data fields before the files: `csrf` is the first part, as in the form.
    return await client.post(
        "/installer/restore",
        data={"csrf": csrf},
        files={"backup": ("hems-backup.zip", content, "application/zip")},
    )


def make_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


async def test_round_trip_download_change_upload_confirm_restart_reopen(tmp_path: Path) -> None:
    restarts: list[str] = []
    web, db, path = await serve(tmp_path, restarts)
    db_path = tmp_path / "var" / "hems.db"
    await db.execute("CREATE TABLE marker (v TEXT)")
    await db.execute("INSERT INTO marker VALUES ('backed up')")
    await db.execute("INSERT INTO devices(device_pk, device_id) VALUES (1, 'meter')")
    await db.execute("INSERT INTO quantities(quantity_pk, name) VALUES (1, 'power_w')")
    at_ms = int(T0.timestamp() * 1000)
    await db.execute("INSERT INTO readings VALUES (1, 1, ?, 230.0)", (at_ms,))
    base = f"http://127.0.0.1:{web.bound_port}"
    client, csrf = await logged_in(base)
    try:
        backup = await client.get("/installer/backup")
        assert backup.status_code == 200
        changed = CONFIG.replace("name: Test home", "name: Changed since")
        path.write_text(changed)
        await db.execute("INSERT INTO marker VALUES ('after the backup')")

        review = await upload(client, csrf, backup.content)
        assert review.status_code == 200, review.text
        assert "-  name: Changed since" in review.text and "+  name: Test home" in review.text
        assert "Database snapshot:" in review.text
        assert "newest reading\n2026-07-01T12:00:00+00:00" in review.text
        assert path.read_text() == changed and restarts == []  # nothing written yet
        assert not sibling(db_path, ".restore").exists()

        done = await client.post(
            "/installer/restore",
            data={"csrf": csrf, "confirm": "1", "token": _field(review.text, "token"),
                  "base": _field(review.text, "base")},
        )  # fmt: skip
        assert done.status_code == 200 and 'role="status"' in done.text
        assert restarts == ["restart"]
        assert path.read_text() == CONFIG
        assert path.with_name("hems.yaml.bak").read_text() == changed
        assert sibling(db_path, ".restore").exists()
        entries = [
            (e.kind, e.detail) for e in await AuthStore(db, ManualClock(T0)).security_log(10)
        ]
        assert (
            "config-changed",
            "backup restored from the page: database snapshot staged and config file changed "
            "(owner session)",
        ) in entries
        # The same confirmation again has nothing left to place.
        again = await client.post(
            "/installer/restore",
            data={"csrf": csrf, "confirm": "1", "token": _field(review.text, "token"),
                  "base": _field(review.text, "base")},
        )  # fmt: skip
        assert again.status_code == 409
    finally:
        await client.aclose()
        await web.stop()
        await db.close()

    # The daemon's restart: the store opens and swaps the snapshot in.
    reopened = await Database.open(db_path)
    try:
        rows = await reopened.fetchall("SELECT v FROM marker ORDER BY rowid")
        assert [r[0] for r in rows] == ["backed up"]
    finally:
        await reopened.close()
    assert not sibling(db_path, ".restore").exists()
    aside = await Database.open(sibling(db_path, ".before-restore"))
    try:
        rows = await aside.fetchall("SELECT v FROM marker ORDER BY rowid")
        assert [r[0] for r in rows] == ["backed up", "after the backup"]
    finally:
        await aside.close()


async def test_bad_uploads_are_refused_with_the_reason_and_nothing_changes(
    tmp_path: Path,
) -> None:
    restarts: list[str] = []
    web, db, path = await serve(tmp_path, restarts)
    db_path = tmp_path / "var" / "hems.db"
    snapshot = tmp_path / "snapshot.db"
    await db.backup(snapshot)
    good_db = snapshot.read_bytes()
    bad_db = tmp_path / "bad.db"
    corrupt(bad_db)
    bad_config = CONFIG.replace("fuse_a: 60", "fuse_a: 0").replace("phases: 1", "phases: 2")
    cases: list[tuple[bytes, list[str]]] = [
        (b"PK but not really a zip", ["backup: not a zip file"]),
        (
            make_zip({"hems.yaml": CONFIG.encode(), "hems.db": bad_db.read_bytes()}),
            ["hems.db: not a sound SQLite database: database disk image is malformed"],
        ),
        (
            make_zip({"hems.yaml": bad_config.encode(), "hems.db": good_db}),
            ["hems.yaml: limits.fuse_a: must be &gt; 0.0"],
        ),
        (
            make_zip({"hems.yaml": CONFIG.encode(), "hems.db": good_db, "../evil": b"x"}),
            ["../evil: a path, not a file name; refused"],
        ),
        (
            make_zip({"hems.yaml": CONFIG.encode(), "hems.db": good_db, "extra.txt": b"x"}),
            ["extra.txt: not part of a backup (expected hems.yaml, hems.db)"],
        ),
        (make_zip({"hems.yaml": CONFIG.encode()}), ["hems.db: missing from the zip"]),
    ]
    base = f"http://127.0.0.1:{web.bound_port}"
    client, csrf = await logged_in(base)
    try:
        for content, reasons in cases:
            r = await upload(client, csrf, content)
            assert r.status_code == 422, (reasons, r.text)
            for reason in reasons:
                assert reason in r.text, (reason, r.text)
        # Without the CSRF field first, the multipart post is refused before it is read.
        r = await client.post(
            "/installer/restore",
            files={"backup": ("b.zip", make_zip({"hems.yaml": CONFIG.encode()}), "x")},
        )
        assert r.status_code == 403
        assert path.read_text() == CONFIG and restarts == []
        assert not path.with_name("hems.yaml.bak").exists()
        leftovers = sorted(p.name for p in db_path.parent.iterdir() if ".restore" in p.name)
        assert leftovers == []
    finally:
        await client.aclose()
        await web.stop()
        await db.close()


async def test_the_bad_config_lists_each_error(tmp_path: Path) -> None:
    web, db, _ = await serve(tmp_path, [])
    snapshot = tmp_path / "snapshot.db"
    await db.backup(snapshot)
    bad = CONFIG.replace("fuse_a: 60", "fuse_a: 0").replace("phases: 1", "phases: 7")
    client, csrf = await logged_in(f"http://127.0.0.1:{web.bound_port}")
    try:
        r = await upload(
            client, csrf, make_zip({"hems.yaml": bad.encode(), "hems.db": snapshot.read_bytes()})
        )
        assert r.status_code == 422
        problems = r.text.count('<li class="problem">hems.yaml: ')
        assert problems >= 2 and "limits.phases" in r.text and "limits.fuse_a" in r.text
    finally:
        await client.aclose()
        await web.stop()
        await db.close()


async def test_an_upload_past_the_cap_is_413(tmp_path: Path) -> None:
    web, db, path = await serve(tmp_path, [], max_upload_bytes=4096)
    client, csrf = await logged_in(f"http://127.0.0.1:{web.bound_port}")
    try:
        r = await upload(client, csrf, b"\0" * 10_000)
        assert r.status_code == 413 and "backup: larger than 4096 bytes" in r.text
        assert path.read_text() == CONFIG
    finally:
        await client.aclose()
        await web.stop()
        await db.close()
