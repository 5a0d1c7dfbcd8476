"""The owner's page, rendered on the server (Jinja2) from the same data as the JSON API.

The page is a set of fragments (`FRAGMENTS`): the first load renders them all; app.js then
fetches each one again from /fragment/<name> every few seconds and swaps it in, so no
inline script is needed (the CSP forbids it) and the numbers are formatted in one place.
Times are 24-hour in the site's time zone. Unknown values are "–", never 0.

The daemon hands in what SiteState does not hold (`SiteView`: the zone, the plan, the
uplink's link state, tariff prices); the stages' JSON providers (stages, control, chargers,
flex events, reports, keys) are read as the API serves them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from markupsafe import Markup

from hems.core.clock import Clock
from hems.core.plan import Plan
from hems.core.quantities import SITE_QUANTITIES, site_values
from hems.core.readings import Quantity, Role
from hems.core.state import SiteState
from hems.store.timeseries import ReadingStore
from hems.web import svg
from hems.web.auth import SecurityEntry
from hems.web.health import HealthReason
from hems.web.render import render

# JSON as the providers return it, after a round trip through json (plain dicts and lists).
Json = dict[str, "Json"] | list["Json"] | str | int | float | bool | None
Provider = Callable[[], object]
PricesFn = Callable[[datetime, int], list[float | None]]


_UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class SiteView:
    """What the daemon hands the page beyond SiteState and the JSON providers."""

    timezone: ZoneInfo = _UTC
    plan: Callable[[], Plan | None] | None = None  # None: no planner
    uplink_connected: Callable[[], bool] | None = None  # None: no uplink configured
    # Import price [per kWh] of `n` half hours from a start; None where unknown.
    import_prices: PricesFn | None = None


# name -> refresh period [s]; each is one template `owner_<name>.html`.
FRAGMENTS: dict[str, int] = {
    "alerts": 5,
    "live": 2,
    "plan": 10,
    "control": 5,
    "chargers": 5,
    "batteries": 10,
    "money": 60,
    "flex": 5,
    "history": 60,
    "security": 30,
    "keys": 30,
}
# The owner's charging modes, as the page names them (the control loop's strategies).
EV_MODES = (
    ("plan", "Plan by departure"),
    ("fast", "Now (fast)"),
    ("min-pv", "Minimum + PV"),
    ("pv-only", "PV only"),
    ("off", "Off"),
    ("default", "As configured"),
)
# Health reasons (hems.web.health codes) that mean a hard limit cannot be kept, in words.
_LIMIT_REASONS = {
    "export_limit_unenforceable": "The export limit cannot be enforced: PV {detail} cannot "
    "be curtailed and no battery is under control.",
    "export_limit_battery_only": "The export limit rests on the battery alone: PV {detail} "
    "cannot be curtailed, so export may pass the limit once the battery is full.",
    "fuse_phases_unmeasured": "The grid meter {detail} gives no per-phase values: the fuse is "
    "guarded as if all house load were on one phase, so loads may be held back early.",
    "no_grid_meter": "No grid meter is configured: the fuse and the export limit cannot be "
    "guarded.",
}
HISTORY_RANGES = {"today": "Today", "yesterday": "Yesterday", "week": "Last 7 days"}
_PLAN_ROWS = 12  # the table shows the next six hours; the chart shows the whole horizon
_SHADED = frozenset({"accepted", "reported"})


class OwnerPage:
    def __init__(
        self,
        state: SiteState,
        clock: Clock,
        store: ReadingStore | None,
        site_name: str,
        providers: Mapping[str, Provider],
        security_log: Callable[[], Awaitable[list[SecurityEntry]]],
    ) -> None:
        self._state = state
        self._clock = clock
        self._store = store
        self._site_name = site_name
        self._providers = providers
        self._security_log = security_log
        self.view = SiteView()
        self.health: Callable[[], Sequence[HealthReason]] | None = None

    async def index(self, csrf: str, history: str = "today") -> str:
        history = history if history in HISTORY_RANGES else "today"
        fragments = {name: Markup(await self._fragment(name, history)) for name in FRAGMENTS}
        chargers = await self._json("chargers")
        return render(
            "owner_index.html",
            csrf=csrf,
            site=self._site_name,
            fragments=fragments,
            charger_ids=sorted(_dict(_dict(chargers).get("chargers"))),
            has_chargers=chargers is not None,
            ev_modes=EV_MODES,
        )

    async def fragment(self, name: str, history: str = "today") -> str | None:
        if name not in FRAGMENTS:
            return None
        return await self._fragment(name, history if history in HISTORY_RANGES else "today")

    async def _fragment(self, name: str, history: str) -> str:
        builders: dict[str, Callable[[], Awaitable[dict[str, object]]]] = {
            "alerts": self._alerts,
            "live": self._live,
            "plan": self._plan,
            "control": self._control,
            "chargers": self._chargers,
            "batteries": self._batteries,
            "money": self._money,
            "flex": self._flex,
            "history": lambda: self._history(history),
            "security": self._security,
            "keys": self._keys,
        }
        context = await builders[name]()
        src = f"/fragment/{name}" + (f"?range={history}" if name == "history" else "")
        return render(
            f"owner_{name}.html",
            frag_id=f"frag-{name}",
            src=src,
            every_s=FRAGMENTS[name],
            hhmm=self._hhmm,
            when=lambda v: self._fmt(v, "%Y-%m-%d %H:%M"),
            power=svg.fmt_power,
            **context,
        )

    # -- the fragments' data --------------------------------------------------------------
    async def _alerts(self) -> dict[str, object]:
        """Everything unsafe, in words: the banner at the top of the page."""
        alerts: list[str] = []
        grids = [d for d, r in self._state.devices.items() if r is Role.GRID]
        for device_id in grids:
            if self._state.is_stale(device_id):
                reason = self._state.down_reason(device_id)
                alerts.append(
                    f"The grid meter {device_id} is not reporting"
                    + (f" ({reason})" if reason else "")
                    + ": the site's limits are guarded blind."
                )
        control = _dict(await self._json("control"))
        if control and _dict(control.get("status")).get("healthy") is False:
            alerts.append("Control is unhealthy: see the control section.")
        for reason in self.health() if self.health is not None else ():
            words = _LIMIT_REASONS.get(reason.code)
            if words is not None:
                alerts.append(words.format(detail=reason.detail))
        uplink = self.view.uplink_connected
        if uplink is not None and not uplink():
            alerts.append("The aggregator uplink is not connected.")
        stages = _dict(await self._json("stages"))
        failures = [
            {
                "name": name,
                "failures": _dict(f).get("failures"),
                "last_error": _dict(f).get("last_error") or "",
                "restarting_in_s": _dict(f).get("restarting_in_s"),
            }
            for name, f in _dict(stages.get("failures")).items()
        ]
        return {"alerts": alerts, "failures": failures}

    async def _live(self) -> dict[str, object]:
        values = site_values(self._state)
        cards = [
            {
                "key": q.key,
                "name": q.name,
                "unit": q.unit,
                "precision": q.precision,
                "hint": q.description,
                "text": _fmt_value(values[q.key], q.unit, q.precision),
            }
            for q in SITE_QUANTITIES
        ]
        roles = set(self._state.devices.values())
        present = frozenset(
            name
            for name, role in (("pv", Role.PV), ("battery", Role.BATTERY), ("ev", Role.EV))
            if role in roles
        )
        flow = svg.FlowPowers(
            grid_w=values["grid_power_w"],
            pv_w=values["pv_power_w"],
            battery_w=values["battery_power_w"],
            ev_w=values["ev_power_w"],
            load_w=values["load_power_w"],
            battery_soc_pct=values["battery_soc_pct"],
            present=present,
        )
        devices = [
            {
                "id": device_id,
                "role": str(role),
                "stale": self._state.is_stale(device_id),
                "reason": self._state.down_reason(device_id) or "",
            }
            for device_id, role in sorted(self._state.devices.items())
        ]
        readings = [
            {
                "device_id": str(r["device_id"]),
                "quantity": str(r["quantity"]),
                "stale": bool(r["stale"]),
                "unit": str(r["unit"]),
                "value": _fmt_number(cast(float, r["value"]), str(r["unit"])),
                "age_s": f"{cast(float, r['age_s']):.0f} s",
            }
            for r in self._state.snapshot()
        ]
        return {
            "now": self._fmt(self._clock.now(), "%Y-%m-%d %H:%M"),
            "zone": str(self.view.timezone),
            "cards": cards,
            "flow": Markup(svg.flow_svg(flow)),
            "devices": devices,
            "readings": readings,
        }

    async def _plan(self) -> dict[str, object]:
        source = self.view.plan
        plan = source() if source is not None else None
        if plan is None:
            return {"enabled": source is not None, "plan": None}
        windows = await self._event_windows()
        rows = [
            {
                "start": self._hhmm(s.start),
                "price": f"{s.price_import_per_kwh * 100:.1f} p",
                "grid": svg.fmt_power(s.grid_import_w - s.grid_export_w),
                "targets": ", ".join(f"{d} {svg.fmt_power(w)}" for d, w in s.targets_w.items()),
                "soc": ", ".join(f"{v:.0f} %" for v in s.soc_pct.values()),
            }
            for s in plan.slots[:_PLAN_ROWS]
        ]
        in_view = [w for w in windows if plan.slots and w[0] < plan.slots[-1].end]
        return {
            "enabled": True,
            "plan": plan,
            "meta": f"{plan.status}, cost {plan.cost:.2f}, made {self._hhmm(plan.created_at)}",
            "chart": Markup(svg.plan_chart_svg(plan, self.view.timezone, windows)),
            "windows": [f"{self._hhmm(a)}–{self._hhmm(b)}" for a, b in in_view],
            "rows": rows,
        }

    async def _control(self) -> dict[str, object]:
        control = await self._json("control")
        if control is None:
            return {"control": None}
        c = _dict(control)
        status = _dict(c.get("status"))
        flex = _dict(c.get("flex"))
        meta = f"{status.get('cycles')} cycles, last {status.get('last_cycle_ms')} ms"
        if flex:
            meta += f" · flex event {flex.get('event_id')}: {flex.get('delivered_wh')} Wh delivered"
        interventions = [_dict(i) for i in reversed(_list(c.get("interventions")))]
        return {
            "control": c,
            "healthy": status.get("healthy") is True,
            "meta": meta,
            "interventions": interventions,
        }

    async def _chargers(self) -> dict[str, object]:
        data = await self._json("chargers")
        if data is None:
            return {"chargers": None, "pending": [], "mode_choices": EV_MODES, "has_modes": False}
        d = _dict(data)
        sessions = _dict(d.get("sessions"))
        rows = []
        for charger_id, c in sorted(_dict(d.get("chargers")).items()):
            charger, session = _dict(c), _dict(sessions.get(charger_id))
            limit_a = charger.get("limit_a")
            energy_wh = session.get("energy_wh")
            rows.append(
                {
                    "id": charger_id,
                    "state": str(charger.get("state", "")),
                    "limit": "–" if limit_a is None else f"{limit_a} A",
                    "session": ""
                    if not isinstance(energy_wh, int | float)
                    else f"{energy_wh / 1000:.1f} kWh{_soc_words(session)} by "
                    f"{self._hhmm(session.get('departure'))}",
                }
            )
        modes = _dict(d.get("modes"))
        for row in rows:
            row["mode"] = str(modes.get(str(row["id"]), ""))
        pending = [str(p) for p in _list(d.get("pending"))]
        return {
            "chargers": rows,
            "pending": pending,
            "mode_choices": EV_MODES,
            "has_modes": bool(modes),
        }

    async def _batteries(self) -> dict[str, object]:
        data = await self._json("batteries")
        if data is None:
            return {"batteries": None}
        d = _dict(data)
        overrides = _dict(d.get("overrides"))
        rows = []
        for device_id, modes in sorted(_dict(d.get("modes")).items()):
            o = _dict(overrides.get(device_id))
            held = ""
            if o:
                what = o.get("mode") or f"{o.get('target')} W"
                held = f"{what} until {self._hhmm(o.get('expires_at'))}"
            rows.append({"id": device_id, "modes": [str(m) for m in _list(modes)], "held": held})
        return {"batteries": rows}

    async def _money(self) -> dict[str, object]:
        data = await self._json("money")
        if data is None:
            return {"money": None}
        d = _dict(data)
        return {
            "money": {
                "currency": str(d.get("currency", "")),
                "method": str(d.get("method", "")),
                "today": _dict(d.get("today")),
                "month": _dict(d.get("month")),
            }
        }

    async def _flex(self) -> dict[str, object]:
        if "events" not in self._providers:
            return {"enabled": False}
        control = _dict(await self._json("control"))
        live = _dict(control.get("flex"))
        book = _dict(await self._json("flex-events"))
        events = [_dict(e) for e in _list(book.get("events"))]
        report_rows = [_dict(r) for r in _list(await self._json("reports"))]
        delivered_kwh = {
            (str(r.get("event_id")), r.get("modification_number") or 0): r.get(
                "total_delivered_kwh"
            )
            for r in reversed(report_rows)  # newest last: a re-sent report wins
        }
        rows = []
        for e in events:
            asked = _instruction(_dict(e.get("requested")))
            done = _instruction(_dict(e.get("effective")))
            status = str(e.get("status", ""))
            rows.append(
                {
                    "id": str(e.get("event_id")),
                    "modification": e.get("modification_number") or 0,
                    "window": f"{self._hhmm(e.get('start'))}–{self._hhmm(e.get('end'))}",
                    "instruction": asked if asked == done else f"{asked} → {done}",
                    "ok": status in _SHADED,
                    "status": status.replace("_", " "),
                    "why": "; ".join(str(r) for r in _list(e.get("reasons"))),
                    "expected": _fmt_kwh(e.get("expected_kwh")),
                    "delivered": _fmt_kwh(
                        delivered_kwh.get(
                            (str(e.get("event_id")), e.get("modification_number") or 0)
                        )
                    ),
                    # The button; the flex policy decides on the server whether it may.
                    "can_opt_out": status == "accepted" and _after_now(e.get("end"), self._clock),
                }
            )
        rejected = [_dict(r) for r in reversed(_list(book.get("rejected")))]
        reports = []
        for rep in report_rows:
            reports.append(
                {
                    **rep,
                    "total": _fmt_kwh(rep.get("total_delivered_kwh")),
                    "periods": [
                        {
                            "window": f"{self._hhmm(p.get('period_start'))}–"
                            f"{self._hhmm(p.get('period_end'))}",
                            "baseline": _fmt_kwh(p.get("baseline_kwh")),
                            "metered": _fmt_kwh(p.get("metered_kwh")),
                            "delivered": _fmt_kwh(p.get("delivered_kwh")),
                        }
                        for p in map(_dict, _list(rep.get("periods")))
                    ],
                }
            )
        return {
            "enabled": True,
            "live": self._flex_live(live, events),
            "events": rows,
            "rejected": rejected,
            "reports": reports,
        }

    def _flex_live(self, f: dict[str, Json], events: list[dict[str, Json]]) -> str:
        """The event in progress (or the last one) in one sentence."""
        if not f:
            return "No flexibility event in progress."
        ev = next((e for e in events if e.get("event_id") == f.get("event_id")), None)
        delivered_wh = _num(f.get("delivered_wh")) or 0.0
        if f.get("active"):
            when = f"in progress until {self._hhmm(ev['end'])}" if ev else "in progress"
        elif delivered_wh:
            when = f"ended at {self._hhmm(ev['end'])}" if ev else "ended"
            when += (
                "; delivery report sent"
                if ev and ev.get("status") == "reported"
                else "; the report follows once the meter data are in"
            )
        else:
            when = f"starts at {self._hhmm(ev['start'])}" if ev else "not started"
        kind = "import cap" if f.get("kind") == "import-cap" else "export floor"
        text = (
            f"{f.get('event_id')}: {when} · baseline {svg.fmt_power(_num(f.get('baseline_w')))}, "
            f"{kind} {svg.fmt_power(_num(f.get('limit_w')))}"
        )
        if f.get("active") and _num(f.get("delivered_w")) is not None:
            text += f", delivering {svg.fmt_power(_num(f.get('delivered_w')))} now"
        text += f" · {delivered_wh / 1000:.2f} kWh delivered so far"
        if f.get("active"):
            text += f" (expected {(_num(f.get('expected_delivery_wh')) or 0) / 1000:.2f} kWh)"
        return text

    async def _history(self, range_name: str) -> dict[str, object]:
        if self._store is None:
            return {"enabled": False, "range": range_name, "ranges": HISTORY_RANGES}
        since, until = self._history_span(range_name)
        buckets = await self._buckets(since, until)
        totals = [
            ("Import", sum(b.import_wh for b in buckets if b.import_wh is not None)),
            ("Export", sum(b.export_wh for b in buckets if b.export_wh is not None)),
            ("PV", sum(b.pv_wh for b in buckets if b.pv_wh is not None)),
            ("Battery in", sum(b.battery_charge_wh for b in buckets if b.battery_charge_wh)),
            ("Battery out", sum(b.battery_discharge_wh for b in buckets if b.battery_discharge_wh)),
            ("EV", sum(b.ev_wh for b in buckets if b.ev_wh is not None)),
        ]
        return {
            "enabled": True,
            "range": range_name,
            "ranges": HISTORY_RANGES,
            "span": f"{self._fmt(since, '%a %d %b %H:%M')} – {self._fmt(until, '%a %d %b %H:%M')}",
            "chart": Markup(svg.history_svg(buckets, self.view.timezone)),
            "totals": [(name, f"{wh / 1000:.2f}") for name, wh in totals],
        }

    def _history_span(self, range_name: str) -> tuple[datetime, datetime]:
        """[since, until) of a range in the site's days; today and the week end now."""
        now = self._clock.now()
        local = now.astimezone(self.view.timezone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if range_name == "yesterday":
            start = (midnight - timedelta(hours=12)).replace(hour=0)
            return start.astimezone(UTC), midnight.astimezone(UTC)
        if range_name == "week":
            start = (midnight - timedelta(days=6, hours=12)).replace(hour=0)
            return start.astimezone(UTC), now
        return midnight.astimezone(UTC), now

    async def _buckets(self, since: datetime, until: datetime) -> list[svg.HistoryBucket]:
        """Half-hour energy per role from the 30-min roll-ups, summed over the role's devices."""
        assert self._store is not None
        step = timedelta(minutes=30)
        starts: list[datetime] = []
        t = since
        while t < until:
            starts.append(t)
            t += step
        by_role: dict[Role, list[str]] = {}
        for device_id, role in self._state.devices.items():
            by_role.setdefault(role, []).append(device_id)
        sums: dict[tuple[Role, str], dict[datetime, float]] = {}
        for role in (Role.GRID, Role.PV, Role.BATTERY, Role.EV):
            for device_id in by_role.get(role, []):
                rows = await self._store.series(
                    device_id, Quantity.POWER_W, since, until, resolution_s=1800
                )
                for row in rows:
                    at = datetime.fromisoformat(str(row["start"]))
                    for part in ("import_wh", "export_wh"):
                        value = _num(row.get(part))
                        if value is not None:
                            into = sums.setdefault((role, part), {})
                            into[at] = into.get(at, 0.0) + value
        prices: list[float | None] = [None] * len(starts)
        if self.view.import_prices is not None and starts:
            prices = self.view.import_prices(starts[0], len(starts))

        def get(role: Role, part: str, at: datetime) -> float | None:
            return sums.get((role, part), {}).get(at)

        return [
            svg.HistoryBucket(
                start=at,
                import_wh=get(Role.GRID, "import_wh", at),
                export_wh=get(Role.GRID, "export_wh", at),
                pv_wh=get(Role.PV, "import_wh", at),
                battery_charge_wh=get(Role.BATTERY, "import_wh", at),
                battery_discharge_wh=get(Role.BATTERY, "export_wh", at),
                ev_wh=get(Role.EV, "import_wh", at),
                import_price_per_kwh=prices[i] if i < len(prices) else None,
            )
            for i, at in enumerate(starts)
        ]

    async def _security(self) -> dict[str, object]:
        entries = await self._security_log()
        return {
            "entries": [{**asdict(e), "at": self._fmt(e.at, "%Y-%m-%d %H:%M:%S")} for e in entries]
        }

    async def _keys(self) -> dict[str, object]:
        keys = await self._json("keys")
        return {"key": None if keys is None else str(_dict(keys).get("gateway_public_key", ""))}

    # -- helpers ------------------------------------------------------------------------------
    async def _event_windows(self) -> list[tuple[datetime, datetime]]:
        """The accepted flexibility events' windows, to shade on the plan chart."""
        book = _dict(await self._json("flex-events"))
        windows = []
        for e in map(_dict, _list(book.get("events"))):
            start, end = _parse_time(e.get("start")), _parse_time(e.get("end"))
            if start and end and e.get("status") in _SHADED:
                windows.append((start, end))
        return windows

    async def _json(self, name: str) -> Json:
        """A provider's value as the API would serve it (None when there is no provider)."""
        provider = self._providers.get(name)
        if provider is None:
            return None
        value = provider()
        if inspect.isawaitable(value):
            value = await value
        return cast(Json, json.loads(json.dumps(value, default=str)))

    def _hhmm(self, value: object) -> str:
        return self._fmt(value, "%H:%M")

    def _fmt(self, value: object, pattern: str) -> str:
        at = _parse_time(value)
        return "" if at is None else at.astimezone(self.view.timezone).strftime(pattern)


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return None
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return None


def _soc_words(session: dict[str, Json]) -> str:
    soc, target = _num(session.get("soc_pct")), _num(session.get("target_soc_pct"))
    if soc is None or target is None:
        return ""
    source = "measured" if session.get("soc_source") == "measured" else "entered"
    return f" ({soc:.0f} % {source} → {target:.0f} %)"


def _after_now(value: object, clock: Clock) -> bool:
    try:
        return datetime.fromisoformat(str(value)) > clock.now()
    except ValueError:
        return False


def _dict(value: object) -> dict[str, Json]:
    return cast(dict[str, Json], value) if isinstance(value, dict) else {}


def _list(value: object) -> list[Json]:
    return value if isinstance(value, list) else []


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _fmt_value(value: float | None, unit: str, precision: int) -> str:
    if unit == "W":
        return svg.fmt_power(value)
    return svg.DASH if value is None else f"{value:.{precision}f} {unit}"


def _fmt_number(value: float, unit: str) -> str:
    return f"{value:.0f}" if unit in ("W", "Wh") else f"{value:.2f}"


def _fmt_kwh(value: object) -> str:
    number = _num(value)
    return svg.DASH if number is None else f"{number:.2f}"


def _instruction(x: dict[str, Json]) -> str:
    parts = []
    if _num(x.get("import_cap_w")) is not None:
        parts.append(f"import ≤ {svg.fmt_power(_num(x.get('import_cap_w')))}")
    if _num(x.get("export_floor_w")) is not None:
        parts.append(f"export ≥ {svg.fmt_power(_num(x.get('export_floor_w')))}")
    if _num(x.get("setpoint_w")) is not None:
        parts.append(f"grid at {svg.fmt_power(_num(x.get('setpoint_w')))}")
    if x.get("price_per_kwh") is not None:
        parts.append(f"price {x.get('price_per_kwh')} {x.get('currency') or ''}/kWh")
    return ", ".join(parts)
