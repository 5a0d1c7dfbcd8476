"""FlexInstruction: validation, kind and the live candidate."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from hems.core.flex import FlexInstruction, live_candidate

T0 = datetime(2026, 6, 10, 17, 0, tzinfo=UTC)
END = T0 + timedelta(hours=1)


def ins(event_id: str = "e", start: datetime = T0, **kw: object) -> FlexInstruction:
    return FlexInstruction(
        event_id=event_id, modification=0, start=start, end=start + timedelta(hours=1), **kw
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"end": T0}, "end must be after start"),
        ({"start": T0.replace(tzinfo=None), "end": END.replace(tzinfo=None)}, "timezone-aware"),
        ({"import_cap_w": math.inf}, "import_cap_w must be finite"),
        ({"price_per_kwh": math.nan}, "price_per_kwh must be finite"),
        ({"export_floor_w": -1.0}, "export_floor_w must be >= 0"),
        ({"modification": -1, "import_cap_w": 1.0}, "modification must be >= 0"),
        ({}, "needs a power instruction or a price"),
    ],
)
def test_invalid_instructions_are_refused(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"event_id": "e", "modification": 0, "start": T0, "end": END}
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        FlexInstruction(**args)  # type: ignore[arg-type]


def test_kind_active_and_live_limit() -> None:
    both = ins(import_cap_w=500.0, export_floor_w=100.0)
    assert both.kind == "import-cap" and both.live_limit_w == 500.0
    assert ins(export_floor_w=100.0).kind == "export-floor"
    assert ins(turn_up_floor_w=-200.0).kind == "turn-up"
    p = ins(price_per_kwh=-0.1)
    assert p.kind == "price" and p.power_free and p.live_limit_w is None
    assert both.active(T0) and not both.active(END) and not both.active(T0 - timedelta(seconds=1))
    assert both.with_baseline(2000.0).baseline_w == 2000.0


def test_live_candidate_is_the_first_cap_or_floor_still_to_come() -> None:
    done = ins("done", T0 - timedelta(hours=2), import_cap_w=0.0)
    up = ins("up", T0, turn_up_floor_w=3000.0)
    floor = ins("floor", T0 + timedelta(hours=2), export_floor_w=1000.0)
    cap = ins("cap", T0 + timedelta(hours=1), import_cap_w=800.0)
    assert live_candidate([done, up, floor, cap], T0) == cap
    assert live_candidate([up], T0) is None
