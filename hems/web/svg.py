"""The owner's page drawn on the server as SVG: pure functions of values, no I/O.

Every drawing has a viewBox and width 100 %, so it scales down to a 360 px phone. Colours are
presentation attributes (the CSP forbids inline style, not these). Unknown values (None: no
fresh reading) are drawn as "–" and dashed, never as 0 W: the page must not claim the grid is
idle when the meter is silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from math import hypot
from zoneinfo import ZoneInfo

from hems.core.plan import Plan

DASH = "–"
_IDLE_W = 1.0  # below this a flow is drawn without an arrow: nothing flows


def fmt_power(power_w: float | None) -> str:
    """A power for people: "–" when unknown, kW from 1 kW, else whole watts."""
    if power_w is None:
        return DASH
    if abs(power_w) >= 1000:
        return f"{power_w / 1000:.2f} kW"
    return f"{round(power_w)} W"


# -- the live energy flow ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FlowPowers:
    """The site's powers [W] in the readings' signs (grid + import, PV + producing, battery +
    charging, EV + charging, load + consuming); None when unknown or stale. `present` names
    the nodes the site has besides grid and house ("pv", "battery", "ev")."""

    grid_w: float | None
    pv_w: float | None
    battery_w: float | None
    ev_w: float | None
    load_w: float | None
    battery_soc_pct: float | None = None
    present: frozenset[str] = frozenset({"pv", "battery", "ev"})


@dataclass(frozen=True, slots=True)
class FlowEdge:
    """One line of the diagram: `direction` is "to-house", "from-house", "idle" or "unknown"."""

    node: str
    direction: str
    power: str  # the magnitude, e.g. "1.50 kW" ("–" when unknown)
    word: str = ""  # what the node does, e.g. "charging"

    @property
    def label(self) -> str:
        return f"{self.power} {self.word}".strip()


# Which sign of each node's power flows towards the house (+1: positive flows to the house).
_TOWARDS_HOUSE = {"grid": +1.0, "pv": +1.0, "battery": -1.0, "ev": -1.0}
_WORDS = {
    "grid": ("importing", "exporting"),
    "pv": ("producing", "consuming"),
    "battery": ("discharging", "charging"),
    "ev": ("", "charging"),
}


def flow_edges(p: FlowPowers) -> list[FlowEdge]:
    """The diagram's lines, one per present node: where the power goes, and its label."""
    powers = {"grid": p.grid_w, "pv": p.pv_w, "battery": p.battery_w, "ev": p.ev_w}
    edges = []
    for node, power_w in powers.items():
        if node != "grid" and node not in p.present:
            continue
        if power_w is None:
            edges.append(FlowEdge(node, "unknown", DASH))
            continue
        if abs(power_w) < _IDLE_W:
            edges.append(FlowEdge(node, "idle", fmt_power(0.0)))
            continue
        to_house = power_w * _TOWARDS_HOUSE[node] > 0
        word = _WORDS[node][0 if to_house else 1]
        direction = "to-house" if to_house else "from-house"
        edges.append(FlowEdge(node, direction, fmt_power(abs(power_w)), word))
    return edges


_FLOW_POS = {"house": (180, 150), "grid": (42, 150), "pv": (180, 42), "battery": (180, 258)}
_FLOW_POS["ev"] = (318, 150)
_FLOW_NAMES = {"house": "House", "grid": "Grid", "pv": "PV", "battery": "Battery", "ev": "EV"}
_FLOW_COLOURS = {"grid": "#6b7280", "pv": "#d97706", "battery": "#047857", "ev": "#2563eb"}
_NODE_R = 34


def flow_svg(p: FlowPowers) -> str:
    """The live energy flow: grid, PV, battery and EV around the house, arrows along the flow."""
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 360 300" width="100%" '
        'class="flow" role="img" aria-label="energy flow" font-family="sans-serif" '
        'font-size="12">'
    ]
    hx, hy = _FLOW_POS["house"]
    for edge in flow_edges(p):
        nx, ny = _FLOW_POS[edge.node]
        dx, dy = hx - nx, hy - ny
        d = hypot(dx, dy)
        ux, uy = dx / d, dy / d
        x1, y1 = nx + ux * _NODE_R, ny + uy * _NODE_R
        x2, y2 = hx - ux * _NODE_R, hy - uy * _NODE_R
        known = edge.direction in ("to-house", "from-house")
        colour = _FLOW_COLOURS[edge.node] if known else "#9ca3af"
        dash = ' stroke-dasharray="5 4"' if edge.direction == "unknown" else ""
        out.append(
            f'<g class="edge {edge.direction}" data-node="{edge.node}" '
            f'data-direction="{edge.direction}">'
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{3 if known else 2}"{dash}/>'
        )
        if known:
            # An arrowhead at the middle of the line, pointing the way the power flows.
            sx, sy = (ux, uy) if edge.direction == "to-house" else (-ux, -uy)
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            tip = (mx + sx * 7, my + sy * 7)
            left = (mx - sx * 7 - sy * 6, my - sy * 7 + sx * 6)
            right = (mx - sx * 7 + sy * 6, my - sy * 7 - sx * 6)
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (tip, left, right))
            out.append(f'<polygon class="arrow" points="{points}" fill="{colour}"/>')
        # Horizontal lines: the power above, the word below; vertical ones: right of it.
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        power_text, word = edge.power, edge.word
        if abs(uy) < 0.5:
            out.append(
                f'<text class="flow-label" x="{mx:.1f}" y="{my - 8:.1f}" text-anchor="middle">'
                f"{escape(power_text)}</text>"
            )
            if word:
                out.append(
                    f'<text class="flow-word" x="{mx:.1f}" y="{my + 16:.1f}" '
                    f'text-anchor="middle" fill="#6b7280">{escape(word)}</text>'
                )
        else:
            out.append(
                f'<text class="flow-label" x="{mx + 10:.1f}" y="{my + 4:.1f}">'
                f"{escape(edge.label)}</text>"
            )
        out.append("</g>")
    nodes = ["house", "grid"] + [n for n in ("pv", "battery", "ev") if n in p.present]
    values = {
        "house": fmt_power(p.load_w),
        "grid": fmt_power(p.grid_w),
        "pv": fmt_power(p.pv_w),
        "battery": DASH if p.battery_soc_pct is None else f"{p.battery_soc_pct:.0f} %",
        "ev": fmt_power(p.ev_w),
    }
    for node in nodes:
        x, y = _FLOW_POS[node]
        stroke = _FLOW_COLOURS.get(node, "#1d2330")
        out.append(
            f'<g class="node" data-node="{node}"><circle cx="{x}" cy="{y}" r="{_NODE_R}" '
            f'fill="#fff" stroke="{stroke}" stroke-width="2"/>'
            f'<text x="{x}" y="{y - 4}" text-anchor="middle" font-weight="bold">'
            f"{_FLOW_NAMES[node]}</text>"
            f'<text class="node-value" x="{x}" y="{y + 12}" text-anchor="middle">'
            f"{escape(values[node])}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


# -- time-series charts -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Series:
    name: str
    colour: str
    values: Sequence[float | None]  # one per slot; None: a gap


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    unit: str
    series: Sequence[Series]


# Width, margins and panel sizes in viewBox units: 600 wide keeps 14-unit text readable when
# a phone scales the chart to ~350 px.
_CW, _CL, _CR = 600, 48, 8
_PH, _PGAP, _PTOP = 120, 50, 30


def chart_svg(
    panels: Sequence[Panel],
    starts: Sequence[datetime],
    step: timedelta,
    zone: ZoneInfo,
    windows: Sequence[tuple[datetime, datetime]] = (),
    label: str = "chart",
) -> str:
    """Panels of step lines on one time axis (slot k from `starts[k]` to `starts[k + 1]`,
    the last `step` long: slots may differ in length), with the `windows` (flexibility
    events) shaded in every panel; times 24-hour in `zone`."""
    n = len(starts)
    height = _PTOP + len(panels) * (_PH + _PGAP)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_CW} {height}" width="100%" '
        f'class="chart" role="img" aria-label="{escape(label)}" font-family="sans-serif" '
        'font-size="14">'
    ]
    if n == 0:
        out.append(f'<text x="{_CL}" y="{_PTOP}">no data</text></svg>')
        return "".join(out)
    t0, t1 = starts[0], starts[-1] + step
    span_s = (t1 - t0).total_seconds()
    width = _CW - _CL - _CR

    def x_at(t: datetime) -> float:
        return _CL + width * min(max((t - t0).total_seconds() / span_s, 0.0), 1.0)

    xs = [x_at(t) for t in starts] + [x_at(t1)]
    top = _PTOP
    for panel in panels:
        shaded = [(x_at(a), x_at(b)) for a, b in windows if b > t0 and a < t1]
        _draw_panel(out, panel, xs, top, shaded)
        top += _PH + _PGAP
    for x, text in _ticks(t0, t1, zone):
        out.append(
            f'<text class="tick" x="{x_at(x):.1f}" y="{top - _PGAP + 16}" '
            f'text-anchor="middle">{text}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _ticks(t0: datetime, t1: datetime, zone: ZoneInfo) -> list[tuple[datetime, str]]:
    """Axis labels: local hours (every 3 h, 24-hour clock) or, over days, local midnights."""
    local0 = t0.astimezone(zone)
    if t1 - t0 > timedelta(hours=36):
        day = local0.replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        while day < t1:
            if day >= t0:
                out.append((day, f"{day:%a %d}"))
            day = (day + timedelta(hours=26)).replace(hour=0)  # DST-safe next midnight
        return out
    every_h = 3 if t1 - t0 > timedelta(hours=8) else 1
    hour = local0.replace(minute=0, second=0, microsecond=0)
    out = []
    while hour <= t1:
        if hour >= t0 and hour.hour % every_h == 0:
            out.append((hour, f"{hour:%H:%M}"))
        hour = (hour.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
    return out


def _draw_panel(
    out: list[str],
    panel: Panel,
    xs: list[float],
    top: float,
    windows: list[tuple[float, float]],
) -> None:
    values = [v for s in panel.series for v in s.values if v is not None] or [0.0]
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    if hi - lo < 1e-9:
        hi = lo + 1.0
    pad = (hi - lo) * 0.06
    lo, hi = lo - pad, hi + pad

    def y(v: float) -> float:
        return top + _PH - (v - lo) / (hi - lo) * _PH

    for a, b in windows:
        out.append(
            f'<rect class="event-window" x="{a:.1f}" y="{top}" width="{max(b - a, 1):.1f}" '
            f'height="{_PH}" fill="#fde68a" fill-opacity="0.6"/>'
        )
    out.append(
        f'<rect x="{_CL}" y="{top}" width="{_CW - _CL - _CR}" height="{_PH}" fill="none" '
        'stroke="#d1d5db"/>'
    )
    out.append(
        f'<text x="{_CL}" y="{top - 8}" font-weight="bold">{escape(panel.title)}'
        f' <tspan font-weight="normal" fill="#6b7280">{escape(panel.unit)}</tspan></text>'
    )
    for v in (lo + pad, hi - pad):
        out.append(f'<text x="{_CL - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    if lo < 0 < hi:
        out.append(
            f'<line x1="{_CL}" x2="{_CW - _CR}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
            'stroke="#9ca3af" stroke-dasharray="4 3"/>'
        )
    legend_x = _CW - _CR
    for s in reversed(panel.series):
        out.append(
            f'<text x="{legend_x}" y="{top - 8}" text-anchor="end" fill="{s.colour}">'
            f"{escape(s.name)}</text>"
        )
        legend_x -= 10 + 8 * len(s.name)
    for s in panel.series:
        d = _step_path(xs, [None if v is None else y(v) for v in s.values])
        if d:
            out.append(
                f'<path class="series" data-series="{escape(s.name)}" d="{d}" fill="none" '
                f'stroke="{s.colour}" stroke-width="1.8"/>'
            )


def _step_path(xs: list[float], ys: Sequence[float | None]) -> str:
    """A step line, each value held over its slot; a None breaks the line."""
    parts: list[str] = []
    previous: float | None = None
    for i, v in enumerate(ys):
        if v is None:
            previous = None
            continue
        parts.append(f"M{xs[i]:.1f},{v:.1f}" if previous is None else f"V{v:.1f}")
        parts.append(f"H{xs[i + 1]:.1f}")
        previous = v
    return "".join(parts)


_BLUE, _RED, _GREEN, _ORANGE, _PURPLE, _GREY = (
    "#2563eb", "#dc2626", "#047857", "#d97706", "#7c3aed", "#6b7280",
)  # fmt: skip


def plan_chart_svg(
    plan: Plan, zone: ZoneInfo, windows: Sequence[tuple[datetime, datetime]] = ()
) -> str:
    """The plan over its horizon: prices; planned grid, battery and EV power; SoC."""
    slots = plan.slots
    if not slots:
        return chart_svg([], [], timedelta(minutes=30), zone, label="plan")
    devices = sorted({d for s in slots for d in s.targets_w})
    colours = [_GREEN, _BLUE, _PURPLE, _ORANGE, _RED]
    powers = [Series("grid", _GREY, [(s.grid_import_w - s.grid_export_w) / 1000 for s in slots])]
    powers += [
        Series(d, colours[k % len(colours)], [s.targets_w.get(d, 0.0) / 1000 for s in slots])
        for k, d in enumerate(devices)
    ]
    socs = sorted({d for s in slots for d in s.soc_pct})
    panels = [
        Panel(
            "Price",
            "per kWh",
            [
                Series("import", _RED, [s.price_import_per_kwh for s in slots]),
                Series("export", _GREEN, [s.price_export_per_kwh for s in slots]),
            ],
        ),
        Panel("Planned power", "kW, + import / charge", powers),
        Panel(
            "State of charge",
            "%",
            [
                Series(d, colours[k % len(colours)], [s.soc_pct.get(d) for s in slots])
                for k, d in enumerate(socs)
            ],
        ),
    ]
    # Each slot at its own width: a split slot's import and export phases are shorter.
    step = timedelta(seconds=slots[-1].duration_s)
    return chart_svg(panels, [s.start for s in slots], step, zone, windows, label="plan")


@dataclass(frozen=True, slots=True)
class HistoryBucket:
    """One half hour's energy [Wh] from the roll-ups; None where no device of the role
    reported (unknown, not zero)."""

    start: datetime
    import_wh: float | None = None
    export_wh: float | None = None
    pv_wh: float | None = None
    battery_charge_wh: float | None = None
    battery_discharge_wh: float | None = None
    ev_wh: float | None = None
    import_price_per_kwh: float | None = None


def history_svg(buckets: Sequence[HistoryBucket], zone: ZoneInfo) -> str:
    """Energy per half hour (grid import/export, PV, battery, EV) and the import price."""

    def kwh(values: list[float | None], sign: float = 1.0) -> list[float | None]:
        return [None if v is None else sign * v / 1000 for v in values]

    b = buckets
    panels = [
        Panel(
            "Grid",
            "kWh per half hour",
            [
                Series("import", _RED, kwh([x.import_wh for x in b])),
                Series("export", _GREEN, kwh([x.export_wh for x in b], -1.0)),
            ],
        ),
        Panel(
            "PV, battery, EV",
            "kWh per half hour",
            [
                Series("PV", _ORANGE, kwh([x.pv_wh for x in b])),
                Series("battery in", _BLUE, kwh([x.battery_charge_wh for x in b])),
                Series(
                    "battery out",
                    _PURPLE,
                    kwh([x.battery_discharge_wh for x in b], -1.0),
                ),
                Series("EV", _GREY, kwh([x.ev_wh for x in b])),
            ],
        ),
    ]
    prices = [x.import_price_per_kwh for x in b]
    if any(p is not None for p in prices):
        panels.append(Panel("Import price", "per kWh", [Series("import", _RED, prices)]))
    return chart_svg(panels, [x.start for x in b], timedelta(minutes=30), zone, label="history")
