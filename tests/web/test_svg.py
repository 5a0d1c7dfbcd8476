"""The page's server-drawn SVG: flow directions follow the signs, unknown is "–", events shaded."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hems.core.plan import Plan, PlanSlot
from hems.web.svg import (
    FlowPowers,
    HistoryBucket,
    flow_edges,
    flow_svg,
    fmt_power,
    history_svg,
    plan_chart_svg,
)

LONDON = ZoneInfo("Europe/London")
T0 = datetime(2026, 7, 1, 11, tzinfo=UTC)  # 12:00 in London (BST)


def directions(p: FlowPowers) -> dict[str, str]:
    return {e.node: e.direction for e in flow_edges(p)}


def test_flow_directions_follow_the_reading_signs() -> None:
    importing = FlowPowers(grid_w=1500, pv_w=3000, battery_w=2000, ev_w=7400, load_w=1500)
    assert directions(importing) == {
        "grid": "to-house",  # + import
        "pv": "to-house",  # + producing
        "battery": "from-house",  # + charging
        "ev": "from-house",  # + charging
    }
    exporting = FlowPowers(grid_w=-1234, pv_w=0.0, battery_w=-800, ev_w=0.0, load_w=400)
    assert directions(exporting) == {
        "grid": "from-house",
        "pv": "idle",
        "battery": "to-house",
        "ev": "idle",
    }
    labels = {e.node: e.label for e in flow_edges(exporting)}
    assert labels["grid"] == "1.23 kW exporting" and labels["battery"] == "800 W discharging"
    drawn = flow_svg(exporting)
    assert drawn.startswith("<svg") and 'viewBox="0 0 360 300"' in drawn and 'width="100%"' in drawn
    assert re.search(r'data-node="grid" data-direction="from-house">.*?<polygon', drawn)
    assert 'data-node="pv" data-direction="idle"><line' in drawn
    assert re.search(r'data-node="pv" data-direction="idle">(?:(?!</g>).)*<polygon', drawn) is None


def test_unknown_is_a_dash_never_zero_and_absent_nodes_are_left_out() -> None:
    p = FlowPowers(
        grid_w=None, pv_w=None, battery_w=1234, ev_w=None, load_w=None,
        present=frozenset({"pv", "battery"}),
    )  # fmt: skip
    edges = {e.node: e for e in flow_edges(p)}
    assert set(edges) == {"grid", "pv", "battery"}  # no EV on this site
    assert edges["grid"].direction == "unknown" and edges["grid"].label == "–"
    assert edges["pv"].label == "–"
    drawn = flow_svg(p)
    assert ">0 W<" not in drawn and drawn.count(">–<") >= 4  # grid, pv lines; grid, house
    assert 'data-node="ev"' not in drawn
    assert 'data-node="grid" data-direction="unknown"' in drawn and "stroke-dasharray" in drawn
    assert fmt_power(None) == "–" and fmt_power(0.4) == "0 W" and fmt_power(-2500) == "-2.50 kW"


def plan(n: int = 48) -> Plan:
    slots = tuple(
        PlanSlot(
            start=T0 + timedelta(minutes=30 * i),
            duration_s=1800,
            price_import_per_kwh=0.30 if i % 12 < 6 else 0.10,
            price_export_per_kwh=0.05,
            grid_import_w=1000.0 if i < 10 else 0.0,
            grid_export_w=0.0 if i < 10 else 500.0,
            targets_w={"battery": 2000.0 if i < 10 else -1000.0, "wallbox": 7000.0 * (i < 4)},
            soc_pct={"battery": 20.0 + i},
        )
        for i in range(n)
    )
    return Plan(T0, slots, cost=1.23, status="optimal", notes=("forecast from history",))


def test_plan_chart_shades_flex_windows_and_labels_local_24_hour_times() -> None:
    window = (T0 + timedelta(hours=5), T0 + timedelta(hours=6))  # 17:00–18:00 London
    drawn = plan_chart_svg(plan(), LONDON, [window])
    assert 'width="100%"' in drawn and "viewBox=" in drawn
    shaded = re.findall(r'class="event-window" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', drawn)
    assert len(shaded) == 3  # one per panel: price, power, SoC
    x, width = (float(v) for v in shaded[0])
    # 24 h over 544 units from x=48: the window starts 5/24 in and lasts 1/24.
    assert abs(x - (48 + 544 * 5 / 24)) < 0.2 and abs(width - 544 / 24) < 0.2
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', drawn)
    assert ticks[:3] == ["12:00", "15:00", "18:00"] and "21:00" in ticks and "00:00" in ticks
    assert not any("AM" in t or "PM" in t for t in ticks)
    for name in ("import", "grid", "battery", "wallbox"):
        assert f'data-series="{name}"' in drawn
    assert plan_chart_svg(plan(), LONDON).count('class="event-window"') == 0


def test_history_breaks_lines_where_unknown_and_adds_the_price_when_known() -> None:
    buckets = [
        HistoryBucket(T0, import_wh=500, export_wh=0, pv_wh=100, import_price_per_kwh=0.3),
        HistoryBucket(T0 + timedelta(minutes=30)),  # nothing reported: a gap, not zero
        HistoryBucket(T0 + timedelta(hours=1), import_wh=250, export_wh=100, pv_wh=900),
    ]
    drawn = history_svg(buckets, LONDON)
    imports = re.search(r'data-series="import" d="([^"]+)"', drawn)
    assert imports is not None and imports.group(1).count("M") == 2  # two runs around the gap
    assert "Import price" in drawn
    assert "Import price" not in history_svg(buckets[1:], LONDON)
    week = [HistoryBucket(T0 + timedelta(minutes=30 * i), import_wh=1.0) for i in range(336)]
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', history_svg(week, LONDON))
    assert ticks[:2] == ["Thu 02", "Fri 03"]  # London midnights


def split_plan() -> Plan:
    """24 h of 30-min slots, the first split into a 10-min import phase and a 20-min export
    phase (a time-shared slot, hems.planning.optimiser.timeshare)."""
    whole = plan()
    first, rest = whole.slots[0], whole.slots[1:]
    imp = PlanSlot(
        start=T0, duration_s=600, price_import_per_kwh=0.10, price_export_per_kwh=0.15,
        grid_import_w=6000.0, grid_export_w=0.0, targets_w={"battery": 5000.0},
        soc_pct={"battery": 30.0},
    )  # fmt: skip
    exp = PlanSlot(
        start=T0 + timedelta(minutes=10), duration_s=1200, price_import_per_kwh=0.10,
        price_export_per_kwh=0.15, grid_import_w=0.0, grid_export_w=3000.0,
        targets_w={"battery": -3500.0}, soc_pct={"battery": 20.0},
    )  # fmt: skip
    assert first.end == exp.end
    return Plan(T0, (imp, exp, *rest), cost=1.0, status="optimal")


def test_plan_chart_draws_each_slot_at_its_own_width() -> None:
    # The last hour shaded: it must end at the chart's right edge (48 + 544), whatever the
    # first slot's length; the split slot's phase boundary 10 min in.
    window = (T0 + timedelta(hours=23), T0 + timedelta(hours=24))
    drawn = plan_chart_svg(split_plan(), LONDON, [window])
    x, width = (
        float(v)
        for v in re.findall(
            r'class="event-window" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', drawn
        )[0]
    )
    assert abs(x - (48 + 544 * 23 / 24)) < 0.2 and abs(x + width - (48 + 544)) < 0.2
    grid = re.search(r'data-series="grid" d="([^"]+)"', drawn)
    assert grid is not None
    xs = [float(v) for v in re.findall(r"H([\d.]+)", grid.group(1))]
    assert abs(xs[0] - (48 + 544 * 10 / (24 * 60))) < 0.2  # the import phase: 10 min
    assert abs(xs[1] - (48 + 544 * 30 / (24 * 60))) < 0.2  # the export phase: to 30 min
    assert abs(xs[-1] - (48 + 544)) < 0.2


def test_plan_svg_draws_each_slot_at_its_own_width() -> None:
    from hems.planning.chart import plan_svg

    drawn = plan_svg(split_plan(), "Europe/London")
    paths = re.findall(r'<path d="([^"]+)"', drawn)
    xs = [float(v) for v in re.findall(r"H([\d.]+)", paths[0])]
    # 960 wide, 70 left, 20 right: 870 for 24 h.
    assert abs(xs[0] - (70 + 870 * 10 / (24 * 60))) < 0.2
    assert abs(xs[1] - (70 + 870 * 30 / (24 * 60))) < 0.2
    assert abs(xs[-1] - (70 + 870)) < 0.2
