"""The uplink's key handling without cryptography's serialization package: that package
imports every algorithm's module (RSA, DSA, EC, DH, ciphers, SSH keys; 0.7 MiB of the daemon's
RSS with the uplink on, README Benchmarks), and the gateway's key is one fixed PKCS#8 form."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.errors import ConfigError
from hems.uplink import envelope
from hems.uplink.keys import load_or_create_key, private_key_pem
from tests.config.test_config_imports import modules_after

SERIALIZATION = "cryptography.hazmat.primitives.serialization"


def pkcs8(key: object, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_the_gateway_key_is_written_as_cryptography_writes_pkcs8() -> None:
    for _ in range(20):
        key = Ed25519PrivateKey.generate()
        assert private_key_pem(key) == pkcs8(key)


def test_signing_with_a_stored_key_loads_no_serialization_module(tmp_path: Path) -> None:
    # A key file as cryptography (or `openssl genpkey -algorithm ed25519`) writes it.
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "gateway.pem"
    path.write_bytes(pkcs8(key))
    loaded = modules_after(
        f"""
        from pathlib import Path
        from hems.uplink import envelope
        from hems.uplink.keys import load_or_create_key
        key = load_or_create_key(Path({str(path)!r}))
        assert key.private_bytes_raw() == {key.private_bytes_raw()!r}
        from datetime import UTC, datetime
        public = envelope.load_public_key(envelope.public_key_text(key.public_key()))
        message = envelope.build(
            key, type_="up_ack", site_id="s", seq=1, payload={{"ranges": [[1, 2]]}},
            now=datetime(2026, 1, 1, tzinfo=UTC), ttl_s=60,
        )
        envelope.verify_signature(message, public)
        import hems.uplink.channel
        """
    )
    assert "cryptography.hazmat.bindings._rust" in loaded
    assert SERIALIZATION not in loaded


def test_a_created_key_reads_back_with_cryptography(tmp_path: Path) -> None:
    path = tmp_path / "k" / "gateway.pem"
    key = load_or_create_key(path)
    again = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(again, Ed25519PrivateKey)
    assert again.private_bytes_raw() == key.private_bytes_raw()
    assert load_or_create_key(path).private_bytes_raw() == key.private_bytes_raw()


def test_other_pem_forms_still_go_to_cryptography(tmp_path: Path) -> None:
    path = tmp_path / "gateway.pem"
    key = Ed25519PrivateKey.generate()
    # Same key, other line breaks: not the fixed form's bytes, still read.
    path.write_bytes(pkcs8(key).replace(b"\n", b"\r\n"))
    assert load_or_create_key(path).private_bytes_raw() == key.private_bytes_raw()
    path.write_bytes(pkcs8(generate_private_key(SECP256R1())))
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_or_create_key(path)
    path.write_bytes(pkcs8(key, password=b"secret"))
    with pytest.raises(ConfigError, match="not a PEM key"):
        load_or_create_key(path)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="not a PEM key"):
        load_or_create_key(path)


def test_public_keys_as_text_and_pem() -> None:
    public = Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    text = envelope.public_key_text(public)
    assert envelope.b64url_decode(text) == raw
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert envelope.load_public_key(pem).public_bytes_raw() == raw
    assert envelope.load_public_key(text).public_bytes_raw() == raw
