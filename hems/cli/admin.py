"""`hems admin`: the page's setup code, the owner's password and API tokens, from a
terminal on the gateway (whoever can read the config and the database is the installer)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from hems.cli.core import report_problems
from hems.config import ConfigErrors, load_config
from hems.core.clock import RealClock
from hems.errors import HemsError
from hems.logs import configure
from hems.store.db import Database
from hems.web.auth import AuthStore


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admin = sub.add_parser("admin", help="setup code, owner password and API tokens")
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="COMMAND")
    admin_sub.required = True

    code = admin_sub.add_parser("setup-code", help="print the one-time setup code for /setup")
    code.add_argument("-c", "--config", required=True)
    code.set_defaults(func=lambda a: _run(a, _setup_code))

    password = admin_sub.add_parser(
        "password", help="set the owner's password (stdin when not a terminal)"
    )
    password.add_argument("-c", "--config", required=True)
    password.set_defaults(func=lambda a: _run(a, _password))

    token = admin_sub.add_parser("token", help="API tokens for scripts and Home Assistant")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND")
    token_sub.required = True
    create = token_sub.add_parser("create", help="make a token (printed once)")
    create.add_argument("name")
    create.add_argument("--read-only", action="store_true", help="may read, never change")
    create.add_argument("-c", "--config", required=True)
    create.set_defaults(func=lambda a: _run(a, _token_create))
    listing = token_sub.add_parser("list", help="the tokens, their scope and last use")
    listing.add_argument("-c", "--config", required=True)
    listing.set_defaults(func=lambda a: _run(a, _token_list))
    revoke = token_sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    revoke.add_argument("-c", "--config", required=True)
    revoke.set_defaults(func=lambda a: _run(a, _token_revoke))


def _run(args: argparse.Namespace, job) -> int:  # type: ignore[no-untyped-def]
    # Logs (the store's "migrated") go to stderr: stdout is the code or token, for scripts.
    configure(level="warning", fmt="console", stream=sys.stderr)
    try:
        cfg = load_config(args.config)
    except ConfigErrors as exc:
        return report_problems(exc)

    async def main() -> int:
        db = await Database.open(cfg.storage.path)
        try:
            return int(await job(args, AuthStore(db, RealClock())))
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except HemsError as exc:
        print(f"hems admin: {exc}", file=sys.stderr)
        return 1


async def _setup_code(_: argparse.Namespace, auth: AuthStore) -> int:
    code = await auth.setup_code()
    if code is None:
        print("the owner's password is set; use `hems admin password` to change it")
        return 1
    print(code)
    return 0


async def _password(_: argparse.Namespace, auth: AuthStore) -> int:
    if sys.stdin.isatty():
        first = getpass.getpass("New owner password: ")
        if getpass.getpass("Repeat it: ") != first:
            print("hems admin: the passwords differ; nothing changed", file=sys.stderr)
            return 1
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    await auth.set_password(first, "cli")
    print("owner password set; every session was logged out")
    return 0


async def _token_create(args: argparse.Namespace, auth: AuthStore) -> int:
    token = await auth.create_token(args.name, can_write=not args.read_only)
    print(token)
    print(
        f"token {args.name!r} ({'read-only' if args.read_only else 'read-write'}): shown once; "
        "send it as `Authorization: Bearer <token>`",
        file=sys.stderr,
    )
    return 0


async def _token_list(_: argparse.Namespace, auth: AuthStore) -> int:
    for t in await auth.tokens():
        scope = "read-write" if t.can_write else "read-only"
        used = t.last_used_at.isoformat(timespec="minutes") if t.last_used_at else "never"
        state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
        print(f"{t.name:<20} {scope:<10} {state:<18} last used {used}")
    return 0


async def _token_revoke(args: argparse.Namespace, auth: AuthStore) -> int:
    await auth.revoke_token(args.name)
    print(f"token {args.name!r} revoked")
    return 0
