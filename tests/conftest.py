"""Top-level fixtures shared by every area's tests (shared helpers: tests/testlib.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TESTDATA = REPO.parent / "shared" / "testdata"


@pytest.fixture
def repo_root() -> Path:
    return REPO
