"""`hems keys show`: print this gateway's public key (creating the key on first use)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hems.errors import ConfigError

DEFAULT_CONFIG = "/etc/hems/config.yaml"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="the gateway's signing key")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    keys_sub.required = True
    show = keys_sub.add_parser(
        "show",
        help="print the gateway's Ed25519 public key (base64url), generating it on first use",
    )
    show.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="site configuration (YAML)")
    show.add_argument("--pem", action="store_true", help="print PEM instead of base64url")
    show.set_defaults(func=cmd_keys_show)


def cmd_keys_show(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from hems.cli.core import report_problems
    from hems.config import ConfigErrors, load_config
    from hems.uplink.envelope import public_key_text
    from hems.uplink.keys import load_or_create_key

    try:
        cfg = load_config(args.config)
    except ConfigErrors as exc:
        return report_problems(exc)
    path = cfg.uplink.key_path(Path(cfg.storage.path))
    try:
        key = load_or_create_key(path).public_key()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.pem:
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        print(pem.decode().strip())
    else:
        print(public_key_text(key))
    print(f"key file: {path}", file=sys.stderr)
    return 0
