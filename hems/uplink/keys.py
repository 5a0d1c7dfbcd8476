"""The gateway's own Ed25519 key: generated on first use, kept as a PEM file (mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.errors import ConfigError


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Read the key at `path`, or create it there (atomically, owner-only) if it is missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise ConfigError(
            "uplink.gateway_key_path", f"cannot read {path}: {exc.strerror}"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("uplink.gateway_key_path", f"{path} is not a PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("uplink.gateway_key_path", f"{path} is not an Ed25519 key")
    return key


def _create(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        # link() fails if another process won the race; then use its key.
        try:
            os.link(tmp, path)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            return load_or_create_key(path)
        tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(
            "uplink.gateway_key_path", f"cannot create {path}: {exc.strerror}"
        ) from None
    return key
