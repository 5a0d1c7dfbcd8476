"""Fixtures of the flex tests (helpers live in flexdata.py)."""

from __future__ import annotations

import pytest

from hems.flex.calendar import WorkingDayCalendar


@pytest.fixture
def cal() -> WorkingDayCalendar:
    return WorkingDayCalendar("GB", "ENG")
