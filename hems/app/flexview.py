"""The flexibility events as the page and the API show them: the event book, the aggregator
messages refused, and per event the energy the current plan expects it to deliver.

The expectation (hems.flex.expected) needs the event's baseline, which takes a report build
over the history (tens of ms), so it is computed once per event and modification. It comes from
the newest plan that covers the event's whole window (the planner's recent plans are kept for
this). Plans start at the current slot's start, so a plan made during the event's first slot
may still cover it; once none does (by the event's end at the latest) the last expectation is
kept, beside the delivered figure of the signed report.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from hems.core.flex import FlexInstruction
from hems.core.plan import Plan
from hems.flex.expected import expected_delivery_kwh
from hems.flex.service import FlexService
from hems.flex.views import recent_events
from hems.store.db import Database

_KEEP_EVENTS = 50  # expectations kept (the book shows the last 20 events)
_RECENT_PLANS = 6  # plans looked back on for one that covered an event's whole window


class FlexBookView:
    def __init__(
        self,
        db: Database,
        flex: FlexService,
        plan: Callable[[], Plan | None],
        rejections: Callable[[], Sequence[tuple[str, str]]],
    ) -> None:
        self._db = db
        self._flex = flex
        self._plan = plan
        self._rejections = rejections
        self._plans: deque[Plan] = deque(maxlen=_RECENT_PLANS)
        self._baseline_w: dict[tuple[str, int], float] = {}
        # Events whose baseline had no history: asked again after the next plan (at least
        # every slot), not on every view, since each try is a report build over the history.
        self._no_baseline: set[tuple[str, int]] = set()
        self._expected_kwh: dict[tuple[str, int], float] = {}

    def on_plan(self, plan: Plan) -> None:
        """The planner's listener: a new plan (kept to be looked back on)."""
        self._plans.append(plan)
        self._no_baseline.clear()

    async def view(self) -> dict[str, Any]:
        await self._update_expectations()
        events = await recent_events(self._db)
        for e in events:
            key = (str(e["event_id"]), int(e["modification_number"] or 0))
            kwh = self._expected_kwh.get(key)
            e["expected_kwh"] = None if kwh is None else round(kwh, 3)
        return {
            "events": events,
            "rejected": [
                {"reason": reason, "detail": detail}
                for reason, detail in list(self._rejections())[-10:]
            ],
        }

    async def _update_expectations(self) -> None:
        plans = list(self._plans)
        current = self._plan()  # made before this view subscribed, or the listener's last
        if current is not None and not any(p is current for p in plans):
            plans.append(current)
        if not plans:
            return
        for instruction in await self._flex.instructions():
            if instruction.kind == "price":
                continue  # a price signal asks for no energy
            key = (instruction.event_id, instruction.modification)
            baseline_w = await self._baseline(instruction, key)
            for plan in sorted(plans, key=lambda p: p.created_at, reverse=True):
                kwh = expected_delivery_kwh(
                    plan,
                    instruction.start,
                    instruction.end,
                    baseline_w,
                    turn_up=instruction.kind == "turn-up",
                )
                if kwh is not None:  # the newest plan that covers the whole window
                    self._expected_kwh[key] = kwh
                    break
        while len(self._expected_kwh) > _KEEP_EVENTS:
            self._expected_kwh.pop(next(iter(self._expected_kwh)))
        while len(self._baseline_w) > _KEEP_EVENTS:
            self._baseline_w.pop(next(iter(self._baseline_w)))

    async def _baseline(self, instruction: FlexInstruction, key: tuple[str, int]) -> float:
        known = self._baseline_w.get(key)
        if known is not None:
            return known
        if key in self._no_baseline:
            return math.nan
        baseline_w = await self._flex.live_baseline_w(instruction)
        if math.isfinite(baseline_w):
            self._baseline_w[key] = baseline_w
        else:
            self._no_baseline.add(key)
        return baseline_w
