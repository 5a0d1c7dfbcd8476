"""Fixtures for the uplink tests: a real Mosquitto on a free port (plain or TLS with client
certificates; `tests.testlib.mosquitto`), certificates from `hil.certs`, and keys for
both ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hil.aggregator import MosquittoBroker
from hil.certs import TlsFiles, make_tls
from tests.testlib import mosquitto


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"), ["site-a", "aggregator", "intruder"])


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    async with mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
async def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> AsyncIterator[MosquittoBroker]:
    async with mosquitto(tmp_path, tls_files.broker()) as b:
        yield b


@pytest.fixture(scope="session")
def aggregator_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
