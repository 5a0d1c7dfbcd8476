"""Fixtures for the OCPP tests; the helpers live in ocpp_helpers.py (unique module name)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from hems.store.db import Database


@pytest.fixture(params=["1.6", "2.0.1"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db(tmp_path: Any) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "hems.db")
    try:
        yield database
    finally:
        await database.close()
