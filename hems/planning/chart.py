"""A dependency-free SVG chart of a plan: prices, planned powers and SoC on one time axis."""

from __future__ import annotations

from html import escape
from zoneinfo import ZoneInfo

from hems.core.plan import Plan

_W, _LEFT, _RIGHT = 960, 70, 20
_PANEL_H, _GAP, _TOP = 170, 40, 40
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _step_path(xs: list[float], ys: list[float]) -> str:
    """A step line: each value held over its slot."""
    parts = [f"M{xs[0]:.1f},{ys[0]:.1f}"]
    for i in range(len(ys)):
        parts.append(f"H{xs[i + 1]:.1f}")
        if i + 1 < len(ys):
            parts.append(f"V{ys[i + 1]:.1f}")
    return "".join(parts)


def _panel(
    out: list[str],
    top: float,
    title: str,
    unit: str,
    series: list[tuple[str, list[float]]],
    xs: list[float],
) -> None:
    values = [v for _, s in series for v in s] or [0.0]
    lo, hi = min(0.0, min(values)), max(values)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad

    def y(v: float) -> float:
        return top + _PANEL_H - (v - lo) / (hi - lo) * _PANEL_H

    out.append(
        f'<rect x="{_LEFT}" y="{top}" width="{_W - _LEFT - _RIGHT}" height="{_PANEL_H}" '
        'fill="none" stroke="#ccc"/>'
    )
    out.append(f'<text x="{_LEFT}" y="{top - 8}" font-weight="bold">{escape(title)}</text>')
    for v in (lo + pad, (lo + hi) / 2, hi - pad):
        out.append(f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    out.append(f'<text x="8" y="{top + _PANEL_H / 2:.1f}">{escape(unit)}</text>')
    if lo < 0 < hi:
        out.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
        )
    legend_x = _LEFT + 160
    for k, (name, s) in enumerate(series):
        colour = _COLOURS[k % len(_COLOURS)]
        out.append(
            f'<path d="{_step_path(xs, [y(v) for v in s])}" fill="none" '
            f'stroke="{colour}" stroke-width="1.6"/>'
        )
        out.append(f'<text x="{legend_x}" y="{top - 8}" fill="{colour}">{escape(name)}</text>')
        legend_x += 14 + 8 * len(name)


def plan_svg(plan: Plan, timezone: str = "UTC") -> str:
    """The plan as an SVG document (prices, powers, SoC)."""
    zone = ZoneInfo(timezone)
    n = len(plan.slots)
    span = _W - _LEFT - _RIGHT
    # Each slot at its own width (a split slot's two phases are shorter than a slot).
    if n:
        t0, t1 = plan.slots[0].start, plan.slots[-1].end
        total_s = max((t1 - t0).total_seconds(), 1e-9)
        edges = [s.start for s in plan.slots] + [t1]
        xs = [_LEFT + span * (t - t0).total_seconds() / total_s for t in edges]
    else:
        xs = [float(_LEFT)]
    height = _TOP + 3 * (_PANEL_H + _GAP) + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{_LEFT}" y="18" font-size="14">hems plan {escape(plan.status)} · '
        f"created {plan.created_at.astimezone(zone):%Y-%m-%d %H:%M} · "
        f"cost {plan.cost:.2f}</text>",
    ]
    prices = [
        ("import", [s.price_import_per_kwh for s in plan.slots]),
        ("export", [s.price_export_per_kwh for s in plan.slots]),
    ]
    devices = sorted({d for s in plan.slots for d in s.targets_w})
    powers = [("grid", [(s.grid_import_w - s.grid_export_w) / 1000 for s in plan.slots])]
    powers += [(d, [s.targets_w.get(d, 0.0) / 1000 for s in plan.slots]) for d in devices]
    socs = sorted({d for s in plan.slots for d in s.soc_pct})
    soc_series = [(d, [s.soc_pct.get(d, 0.0) for s in plan.slots]) for d in socs]
    top = _TOP + 10
    _panel(out, top, "prices", "/kWh", prices, xs)
    top += _PANEL_H + _GAP
    _panel(out, top, "planned power (+ import / charge)", "kW", powers, xs)
    top += _PANEL_H + _GAP
    _panel(out, top, "state of charge", "%", soc_series or [("none", [0.0] * n)], xs)
    # Time axis labels every ~3 h.
    every = max(1, n // 16)
    for i in range(0, n, every):
        t = plan.slots[i].start.astimezone(zone)
        out.append(
            f'<text x="{xs[i]:.1f}" y="{top + _PANEL_H + 14}" text-anchor="middle">{t:%H:%M}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
