"""The gateway's own Ed25519 key: generated on first use, kept as a PEM file (mode 0600).

The file is PKCS#8 (RFC 8410), what `openssl genpkey -algorithm ed25519` writes too. Its one
form for an Ed25519 key without attributes is a fixed 16-byte DER prefix and the 32-byte seed,
read and written here without `cryptography.hazmat.primitives.serialization`: that package
imports every algorithm's module (RSA, DSA, EC, DH, ciphers, SSH keys: 21 modules, 0.7 MiB of
the daemon's RSS), none of which the uplink uses. Any other PEM goes to it.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.errors import ConfigError

# SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
PEM_BEGIN, PEM_END = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The key as PKCS#8 PEM, byte for byte what cryptography's `private_bytes(PEM, PKCS8,
    NoEncryption())` gives (tests/config/test_uplink_imports.py)."""
    der = PKCS8_ED25519_PREFIX + key.private_bytes_raw()
    return PEM_BEGIN + b"\n" + base64.b64encode(der) + b"\n" + PEM_END + b"\n"


def plain_seed(pem: bytes) -> bytes | None:
    """The 32-byte seed of an unencrypted PKCS#8 Ed25519 PEM without attributes; None for any
    other content (another algorithm, attributes, encryption, several blocks)."""
    text = pem.strip()
    if not (text.startswith(PEM_BEGIN) and text.endswith(PEM_END)):
        return None
    body = text[len(PEM_BEGIN) : -len(PEM_END)]
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(PKCS8_ED25519_PREFIX) + 32 or not der.startswith(PKCS8_ED25519_PREFIX):
        return None
    return der[len(PKCS8_ED25519_PREFIX) :]


def load_pem_key(data: bytes) -> object:
    """The private key in a PEM file, of whatever algorithm; ValueError or TypeError (e.g. an
    encrypted key) as cryptography raises them."""
    seed = plain_seed(data)
    if seed is not None:
        return Ed25519PrivateKey.from_private_bytes(seed)
    from cryptography.hazmat.primitives import serialization  # any other form: rare

    return serialization.load_pem_private_key(data, password=None)


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
        key = load_pem_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError("uplink.gateway_key_path", f"{path} is not a PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("uplink.gateway_key_path", f"{path} is not an Ed25519 key")
    return key


def _create(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = private_key_pem(key)
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
