"""Fixtures for the smart-meter tests: the shared telegram corpus and a Mosquitto broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import SHARED_TESTDATA
from tests.testlib import mosquitto as start_mosquitto

TESTDATA = SHARED_TESTDATA / "meters"


@pytest.fixture
def meter_data() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"shared meter test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[int]:
    """A broker on a free loopback port; yields the port."""
    async with start_mosquitto(tmp_path) as broker:
        yield broker.port
