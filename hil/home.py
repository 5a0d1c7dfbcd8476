"""Physics of a simulated home: PV, household load, a battery and the grid meter.

Pure and deterministic: nothing here does I/O or reads the wall clock. The caller (the rig)
advances the home with `Home.step(now, dt_s)` from an injected clock. PV and household load are
pure functions of (seed, time), so the same seed gives the same day whatever the step length.

Signs (as in hems.core): grid + = import, battery + = charging, PV + = producing,
external loads (EV) + = consuming. The balance every step is

    grid_w = load_w + external_w + battery_w - pv_w
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hems.core.capabilities import BatteryMode

__all__ = [
    "Home",
    "HomeConfig",
    "HomeState",
    "clear_sky_ghi_w_per_m2",
    "solar_elevation_deg",
]


@dataclass(frozen=True, kw_only=True)
class HomeConfig:
    """A GB demo home by default: 4 kWp PV, 10 kWh / 5 kW battery, 60 A single-phase fuse."""

    seed: int = 1
    latitude_deg: float = 51.5  # London
    longitude_deg: float = -0.13
    timezone: str = "Europe/London"  # household habits follow local time
    phases: int = 1  # 1 or 3
    nominal_voltage_v: float = 230.0
    nominal_frequency_hz: float = 50.0
    fuse_a: float = 60.0  # per phase
    # PV
    pv_kwp: float = 4.0
    pv_performance_ratio: float = 0.85  # wiring, temperature, inverter losses
    pv_inverter_max_w: float = 3680.0  # WMax; G98 single-phase limit in GB
    cloudiness: float = 0.3  # 0 = clear sky, 1 = overcast; mean attenuation depth
    cloud_transients_per_h: float = 4.0  # passing clouds: short deep dips
    # Household load
    load_base_w: float = 250.0
    load_morning_peak_w: float = 700.0  # extra at 07:30 local
    load_evening_peak_w: float = 1400.0  # extra at 18:30 local
    load_noise_pct: float = 15.0  # multiplicative, per-minute value noise
    load_phase_weights: tuple[float, float, float] = (0.45, 0.30, 0.25)  # 3-phase split
    # Battery (AC-coupled)
    battery_capacity_wh: float = 10_000.0
    battery_max_charge_w: float = 5000.0
    battery_max_discharge_w: float = 5000.0
    battery_charge_efficiency: float = 0.95  # AC -> stored
    battery_discharge_efficiency: float = 0.95  # stored -> AC
    battery_soc_min_pct: float = 5.0
    battery_soc_max_pct: float = 100.0
    battery_initial_soc_pct: float = 50.0
    battery_reserve_pct: float = 10.0  # self-consumption does not discharge below this
    # Register start values: real meters never read 0, and SunSpec acc32 0 means "not
    # implemented", so the cumulative registers start part-way through a meter's life.
    initial_import_wh: float = 4_321_000.0
    initial_export_wh: float = 1_234_000.0
    initial_pv_wh: float = 8_765_000.0
    initial_battery_charge_wh: float = 2_100_000.0
    initial_battery_discharge_wh: float = 1_900_000.0
    # Integration
    max_substep_s: float = 10.0  # long steps are split so SoC limits stay exact

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.phases not in (1, 3):
            problems.append(f"phases: must be 1 or 3, got {self.phases}")
        if not -90.0 <= self.latitude_deg <= 90.0:
            problems.append("latitude_deg: must be -90..90")
        if not -180.0 <= self.longitude_deg <= 180.0:
            problems.append("longitude_deg: must be -180..180")
        for name in (
            "pv_kwp",
            "pv_inverter_max_w",
            "battery_capacity_wh",
            "battery_max_charge_w",
            "battery_max_discharge_w",
            "load_base_w",
            "fuse_a",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name}: must be >= 0")
        for name in ("battery_charge_efficiency", "battery_discharge_efficiency"):
            if not 0.0 < getattr(self, name) <= 1.0:
                problems.append(f"{name}: must be in (0, 1]")
        if not 0.0 <= self.battery_soc_min_pct < self.battery_soc_max_pct <= 100.0:
            problems.append("battery_soc_min_pct/battery_soc_max_pct: need 0 <= min < max <= 100")
        if not self.battery_soc_min_pct <= self.battery_initial_soc_pct <= self.battery_soc_max_pct:
            problems.append("battery_initial_soc_pct: must lie within the min..max SoC")
        if not 0.0 <= self.cloudiness <= 1.0:
            problems.append("cloudiness: must be 0..1")
        if self.max_substep_s <= 0:
            problems.append("max_substep_s: must be > 0")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, kw_only=True)
class HomeState:
    """Everything measured at the end of one step. Per-phase tuples have `phases` entries."""

    at: datetime
    pv_available_w: float  # what the array could deliver now (before clipping and limit)
    pv_w: float  # AC output after inverter clipping and curtailment
    pv_limit_pct: float  # active curtailment limit (100 when none)
    load_w: float  # household load incl. ad-hoc appliances
    external_w: float  # sum of external loads (EV chargers)
    battery_w: float  # AC side, + = charging
    soc_pct: float
    grid_w: float  # + = import
    grid_phase_w: tuple[float, ...]
    pv_phase_w: tuple[float, ...]
    battery_phase_w: tuple[float, ...]
    voltage_phase_v: tuple[float, ...]
    current_phase_a: tuple[float, ...]  # magnitude of the grid current per phase
    frequency_hz: float
    import_wh: float  # cumulative registers
    export_wh: float
    import_phase_wh: tuple[float, ...]
    export_phase_wh: tuple[float, ...]
    pv_energy_wh: float
    battery_charge_wh: float  # AC energy into the battery
    battery_discharge_wh: float  # AC energy out of the battery
    over_current: bool  # some phase above the fuse rating


# --------------------------------------------------------------------------- pure science


def solar_elevation_deg(at: datetime, latitude_deg: float, longitude_deg: float) -> float:
    """Solar elevation angle above the horizon [deg] at an aware instant.

    Notes: fractional-year gamma, equation of time and declination by Spencer's Fourier series,
    true solar time from UTC and longitude, then
    sin(elev) = sin(lat) sin(decl) + cos(lat) cos(decl) cos(hour_angle).
    Accurate to a fraction of a degree, ample for a load-flow simulator.

    References: J. W. Spencer (1971), "Fourier series representation of the position of the
    sun", Search 2(5), 172. NOAA Global Monitoring Laboratory, "General Solar Position
    Calculations".
    """
    if at.tzinfo is None:
        raise ValueError("at: must be timezone-aware")
    utc = at.astimezone(ZoneInfo("UTC"))
    day_of_year = utc.timetuple().tm_yday
    hour = utc.hour + utc.minute / 60.0 + (utc.second + utc.microsecond / 1e6) / 3600.0
    gamma = 2.0 * math.pi / 365.0 * (day_of_year - 1 + (hour - 12.0) / 24.0)
    eqtime_min = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    true_solar_min = hour * 60.0 + eqtime_min + 4.0 * longitude_deg
    hour_angle = math.radians(true_solar_min / 4.0 - 180.0)
    lat = math.radians(latitude_deg)
    sin_elev = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(
        hour_angle
    )
    return math.degrees(math.asin(max(-1.0, min(1.0, sin_elev))))


def clear_sky_ghi_w_per_m2(elevation_deg: float) -> float:
    """Clear-sky global horizontal irradiance [W/m2] from the solar elevation [deg].

    Notes: Haurwitz model, GHI = 1098 cos(z) exp(-0.059 / cos(z)), z = zenith angle;
    0 with the sun below the horizon.

    References: B. Haurwitz (1945), "Insolation in relation to type of cloud",
    Journal of Meteorology 2(3), 154-166.
    """
    cos_z = math.sin(math.radians(elevation_deg))
    if cos_z <= 0.0:
        return 0.0
    return 1098.0 * cos_z * math.exp(-0.059 / cos_z)


@functools.lru_cache(maxsize=4096)
def _unit_random(seed: int, stream: str, index: int) -> float:
    """A reproducible uniform [0, 1) number for (seed, stream, index); str seeds hash stably."""
    return random.Random(f"{seed}:{stream}:{index}").random()


def _value_noise(seed: int, stream: str, t_s: float, knot_s: float) -> float:
    """Smooth noise in [0, 1): random knots every `knot_s`, cosine-interpolated."""
    k = math.floor(t_s / knot_s)
    frac = t_s / knot_s - k
    a = _unit_random(seed, stream, k)
    b = _unit_random(seed, stream, k + 1)
    w = (1.0 - math.cos(math.pi * frac)) / 2.0
    return a + (b - a) * w


def _cloud_factor(seed: int, t_s: float, cloudiness: float, transients_per_h: float) -> float:
    """Fraction of clear-sky irradiance reaching the panels (0..1)."""
    slow = _value_noise(seed, "cloud", t_s, 900.0)  # 15-min weather swings
    factor = 1.0 - 0.8 * cloudiness * slow
    # Passing clouds: each minute one may start, lasting 1-4 min and cutting 40-70 %.
    minute = math.floor(t_s / 60.0)
    p_start = transients_per_h / 60.0
    for m in range(minute - 3, minute + 1):
        if _unit_random(seed, "cloud-start", m) < p_start:
            length_min = 1 + int(_unit_random(seed, "cloud-len", m) * 4)
            if m + length_min > t_s / 60.0:
                factor *= 1.0 - (0.4 + 0.3 * _unit_random(seed, "cloud-depth", m))
                break
    return max(0.05, min(1.0, factor))


def _gauss(hour: float, centre_h: float, sigma_h: float) -> float:
    # Wrap around midnight so a late peak does not jump.
    d = (hour - centre_h + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (d / sigma_h) ** 2)


# --------------------------------------------------------------------------- the home


@dataclass
class _AdHocLoad:
    power_w: float
    start_s: float  # simulation seconds since epoch (UTC timestamp)
    end_s: float  # math.inf for "until removed"
    phase_split: tuple[float, ...]


@dataclass
class _Battery:
    energy_wh: float
    window_w: tuple[float, float] | None = None  # (min, max) AC power, + = charge
    reserve_pct: float = 10.0
    grid_charging_allowed: bool = True


@dataclass(frozen=True)
class _Flows:
    """Mean powers over the last substep: what was integrated into the registers."""

    pv_available_w: float
    pv_w: float
    load_phase_w: tuple[float, ...]
    external_phase_w: tuple[float, ...]
    battery_w: float


@dataclass
class _Counters:
    import_phase_wh: list[float] = field(default_factory=list)
    export_phase_wh: list[float] = field(default_factory=list)
    pv_wh: float = 0.0
    battery_charge_wh: float = 0.0
    battery_discharge_wh: float = 0.0


class Home:
    """A simulated home. Call `step(now, dt_s)` from the rig's clock; read `state`."""

    def __init__(self, config: HomeConfig | None = None, *, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        self.config = config or HomeConfig()
        cfg = self.config
        self._tz = ZoneInfo(cfg.timezone)
        # The config is frozen: split the household load over the phases once, not per substep.
        self._load_shares = (1.0,) if cfg.phases == 1 else self._split(cfg.load_phase_weights)
        self._battery = _Battery(
            energy_wh=cfg.battery_capacity_wh * cfg.battery_initial_soc_pct / 100.0,
            reserve_pct=cfg.battery_reserve_pct,
        )
        self._counters = _Counters(
            import_phase_wh=[cfg.initial_import_wh / cfg.phases] * cfg.phases,
            export_phase_wh=[cfg.initial_export_wh / cfg.phases] * cfg.phases,
            pv_wh=cfg.initial_pv_wh,
            battery_charge_wh=cfg.initial_battery_charge_wh,
            battery_discharge_wh=cfg.initial_battery_discharge_wh,
        )
        self._pv_limit_pct: float | None = None
        self._adhoc: dict[str, _AdHocLoad] = {}
        self._external: dict[str, tuple[float, tuple[float, ...]]] = {}
        self._now: datetime | None = start
        self._last_net_w: float | None = None
        first = start or datetime(2026, 6, 21, 12, tzinfo=self._tz)
        self._flows = self._flows_at(first, 0.0, battery=False)
        self.state: HomeState = self._measure(first)

    # ------------------------------------------------------------------ controls

    @property
    def now(self) -> datetime | None:
        """End of the last step (None before the first step unless `start` was given)."""
        return self._now

    @property
    def pv_limit_pct(self) -> float | None:
        return self._pv_limit_pct

    def set_pv_limit_pct(self, limit_pct: float | None) -> None:
        """Curtail PV AC output to `limit_pct` of the inverter's WMax; None lifts it."""
        if limit_pct is not None and not 0.0 <= limit_pct <= 100.0:
            raise ValueError(f"pv limit_pct: must be 0..100, got {limit_pct}")
        self._pv_limit_pct = limit_pct

    @property
    def battery_window_w(self) -> tuple[float, float] | None:
        return self._battery.window_w

    def set_battery_window(self, min_w: float, max_w: float) -> None:
        """Keep the battery's AC power (+ = charge) within [min_w, max_w].

        Inside the window the battery does self-consumption. A window of one point is a
        setpoint; min_w > 0 forces charging, max_w < 0 forces discharging. Physical limits
        (power, SoC) always win.
        """
        if math.isnan(min_w) or math.isnan(max_w) or min_w > max_w:
            raise ValueError(f"battery window: need min_w <= max_w, got {min_w}..{max_w}")
        self._battery.window_w = (float(min_w), float(max_w))

    def set_battery_setpoint_w(self, power_w: float) -> None:
        """Follow a signed setpoint: + charge, - discharge [W] (clamped by physics)."""
        self.set_battery_window(power_w, power_w)

    def clear_battery_control(self) -> None:
        """Back to normal self-consumption."""
        self._battery.window_w = None

    def set_battery_mode(self, mode: BatteryMode, power_w: float = 0.0) -> None:
        """Map a hems BatteryMode onto a window. power_w is used by the setpoint modes."""
        cfg = self.config
        if mode is BatteryMode.NORMAL:
            self.clear_battery_control()
        elif mode is BatteryMode.HOLD_DISCHARGE:
            self.set_battery_window(0.0, cfg.battery_max_charge_w)
        elif mode is BatteryMode.HOLD_CHARGE:
            self.set_battery_window(-cfg.battery_max_discharge_w, 0.0)
        elif mode is BatteryMode.IDLE:
            self.set_battery_window(0.0, 0.0)
        elif mode is BatteryMode.FORCE_CHARGE:
            self.set_battery_setpoint_w(abs(power_w))
        elif mode is BatteryMode.POWER_SETPOINT:
            self.set_battery_setpoint_w(power_w)
        else:  # pragma: no cover - exhaustive over the enum
            raise ValueError(f"battery mode: unknown {mode!r}")

    @property
    def battery_reserve_pct(self) -> float:
        return self._battery.reserve_pct

    def set_battery_reserve_pct(self, reserve_pct: float) -> None:
        if not 0.0 <= reserve_pct <= 100.0:
            raise ValueError(f"battery reserve_pct: must be 0..100, got {reserve_pct}")
        self._battery.reserve_pct = float(reserve_pct)

    @property
    def grid_charging_allowed(self) -> bool:
        return self._battery.grid_charging_allowed

    def set_grid_charging_allowed(self, allowed: bool) -> None:
        """False: the battery charges from PV surplus only (SunSpec 124 ChaGriSet = PV)."""
        self._battery.grid_charging_allowed = bool(allowed)

    def add_load(
        self,
        name: str,
        power_w: float,
        duration_s: float | None = None,
        *,
        phase_split: Sequence[float] | None = None,
    ) -> None:
        """Switch on an ad-hoc appliance from the current time for `duration_s` (None: until
        `remove_load`). Replaces a load of the same name."""
        if power_w < 0 or math.isnan(power_w):
            raise ValueError(f"load {name}: power_w must be >= 0, got {power_w}")
        if duration_s is not None and duration_s <= 0:
            raise ValueError(f"load {name}: duration_s must be > 0, got {duration_s}")
        if self._now is None:
            raise ValueError(f"load {name}: the home has no time yet; pass start= or step first")
        start_s = self._now.timestamp()
        end_s = math.inf if duration_s is None else start_s + duration_s
        self._adhoc[name] = _AdHocLoad(power_w, start_s, end_s, self._split(phase_split))

    def remove_load(self, name: str) -> None:
        self._adhoc.pop(name, None)

    def kettle(self, duration_s: float = 180.0) -> None:
        self.add_load("kettle", 3000.0, duration_s)

    def oven(self, duration_s: float = 3600.0) -> None:
        self.add_load("oven", 2500.0, duration_s)

    def step_load(self, power_w: float = 10_000.0, duration_s: float = 60.0) -> None:
        """A sudden big load (e.g. a 10 kW step) to exercise fuse protection."""
        self.add_load("step", power_w, duration_s)

    @property
    def active_loads(self) -> dict[str, float]:
        """Ad-hoc loads not yet expired, name -> W."""
        now_s = self._now.timestamp() if self._now is not None else -math.inf
        return {n: ld.power_w for n, ld in self._adhoc.items() if ld.end_s > now_s}

    def set_external_load_w(
        self, name: str, power_w: float, *, phase_split: Sequence[float] | None = None
    ) -> None:
        """Add an external consumer (e.g. an EV charger, + = consuming) to the balance.

        `phase_split` gives each phase's share (e.g. (1, 0, 0) for a single-phase EV on L1 of
        a 3-phase home); default is an even split over the home's phases.
        """
        if math.isnan(power_w) or math.isinf(power_w):
            raise ValueError(f"external load {name}: power_w must be finite, got {power_w}")
        self._external[name] = (float(power_w), self._split(phase_split))

    def remove_external_load(self, name: str) -> None:
        self._external.pop(name, None)

    @property
    def external_loads_w(self) -> dict[str, float]:
        return {n: p for n, (p, _) in self._external.items()}

    # ------------------------------------------------------------------ physics

    def pv_available_w(self, at: datetime) -> float:
        """DC-equivalent PV power the array could give at `at` [W], before any clipping."""
        cfg = self.config
        elev = solar_elevation_deg(at, cfg.latitude_deg, cfg.longitude_deg)
        ghi = clear_sky_ghi_w_per_m2(elev)
        if ghi <= 0.0:
            return 0.0
        cloud = _cloud_factor(cfg.seed, at.timestamp(), cfg.cloudiness, cfg.cloud_transients_per_h)
        return cfg.pv_kwp * ghi * cfg.pv_performance_ratio * cloud

    def household_load_w(self, at: datetime) -> float:
        """Household base load with morning/evening peaks and noise, no ad-hoc loads [W]."""
        cfg = self.config
        local = at.astimezone(self._tz)
        hour = local.hour + local.minute / 60.0 + local.second / 3600.0
        profile = (
            cfg.load_base_w
            + cfg.load_morning_peak_w * _gauss(hour, 7.5, 1.0)
            + cfg.load_evening_peak_w * _gauss(hour, 18.5, 1.5)
        )
        noise = _value_noise(cfg.seed, "load", at.timestamp(), 60.0) * 2.0 - 1.0
        return max(0.0, profile * (1.0 + cfg.load_noise_pct / 100.0 * noise))

    def step(self, now: datetime, dt_s: float) -> HomeState:
        """Advance the home over (now - dt_s, now] and return the new state."""
        if now.tzinfo is None:
            raise ValueError("now: must be timezone-aware")
        if dt_s < 0 or math.isnan(dt_s):
            raise ValueError(f"dt_s: must be >= 0, got {dt_s}")
        if dt_s > 0:  # dt 0: no time passed, only re-read the meters
            n = max(1, math.ceil(dt_s / self.config.max_substep_s))
            h = dt_s / n
            t0 = now - timedelta(seconds=dt_s)
            for i in range(n):
                self._substep(t0 + timedelta(seconds=(i + 1) * h), h)
        self._now = now
        self._adhoc = {k: v for k, v in self._adhoc.items() if v.end_s > now.timestamp()}
        self.state = self._measure(now)
        return self.state

    # ------------------------------------------------------------------ internals

    def _split(self, phase_split: Sequence[float] | None) -> tuple[float, ...]:
        p = self.config.phases
        if phase_split is None:
            return tuple([1.0 / p] * p)
        if len(phase_split) != p or any(w < 0 for w in phase_split) or sum(phase_split) <= 0:
            raise ValueError(f"phase_split: need {p} non-negative weights, got {phase_split}")
        total = float(sum(phase_split))
        return tuple(w / total for w in phase_split)

    def _pv_ac_w(self, at: datetime) -> tuple[float, float]:
        cfg = self.config
        available = self.pv_available_w(at)
        limit_w = cfg.pv_inverter_max_w
        if self._pv_limit_pct is not None:
            limit_w = min(limit_w, cfg.pv_inverter_max_w * self._pv_limit_pct / 100.0)
        return available, min(available, limit_w)

    def _adhoc_phase_w(self, t_end: datetime, h: float) -> list[float]:
        """Average power of ad-hoc loads over the substep, per phase (partial overlap counts)."""
        out = [0.0] * self.config.phases
        if h <= 0:
            return out
        e = t_end.timestamp()
        s = e - h
        for ld in self._adhoc.values():
            overlap = min(e, ld.end_s) - max(s, ld.start_s)
            if overlap <= 0:
                continue
            avg = ld.power_w * min(1.0, overlap / h)
            for i, w in enumerate(ld.phase_split):
                out[i] += avg * w
        return out

    def _battery_power_w(self, net_w: float, pv_w: float, demand_w: float, h: float) -> float:
        """Battery AC power for this substep (+ = charge), honouring window, SoC and limits."""
        cfg = self.config
        b = self._battery
        cap = cfg.battery_capacity_wh
        if cap <= 0 or h <= 0:
            return 0.0
        e_max = cap * cfg.battery_soc_max_pct / 100.0
        e_min = cap * cfg.battery_soc_min_pct / 100.0
        e_rsv = max(e_min, cap * b.reserve_pct / 100.0)
        eta_c = cfg.battery_charge_efficiency
        eta_d = cfg.battery_discharge_efficiency
        max_ch = max(0.0, min(cfg.battery_max_charge_w, (e_max - b.energy_wh) * 3600 / (h * eta_c)))
        max_dis = max(
            0.0, min(cfg.battery_max_discharge_w, (b.energy_wh - e_min) * 3600 * eta_d / h)
        )
        # Self-consumption target: soak up surplus, cover deficit down to the reserve.
        target = net_w
        if target < 0:
            sc_dis = max(0.0, (b.energy_wh - e_rsv) * 3600 * eta_d / h)
            target = max(target, -sc_dis)
        if b.window_w is not None:
            lo, hi = b.window_w
            target = min(max(target, lo), hi)
        if not b.grid_charging_allowed:
            target = min(target, max(0.0, pv_w - demand_w))
        return min(max(target, -max_dis), max_ch)

    def _flows_at(self, t_end: datetime, h: float, *, battery: bool = True) -> _Flows:
        """Mean flows over (t_end - h, t_end], sampled at the midpoint."""
        cfg = self.config
        mid = t_end - timedelta(seconds=h / 2.0)
        available, pv_w = self._pv_ac_w(mid)
        house_w = self.household_load_w(mid)
        adhoc_ph = self._adhoc_phase_w(t_end, h)
        ext_ph = [0.0] * cfg.phases
        for p, split in self._external.values():
            for i, w in enumerate(split):
                ext_ph[i] += p * w
        load_ph = [house_w * w + a for w, a in zip(self._load_shares, adhoc_ph, strict=True)]
        demand_w = sum(load_ph) + sum(ext_ph)
        # The battery inverter reacts to the net it measured one substep ago (real ones lag a
        # second or two), so load steps show briefly at the grid meter.
        net_w = self._last_net_w if self._last_net_w is not None else pv_w - demand_w
        bat_w = self._battery_power_w(net_w, pv_w, demand_w, h) if battery else 0.0
        self._last_net_w = pv_w - demand_w
        return _Flows(available, pv_w, tuple(load_ph), tuple(ext_ph), bat_w)

    def _substep(self, t_end: datetime, h: float) -> None:
        cfg = self.config
        f = self._flows_at(t_end, h)
        b = self._battery
        c = self._counters
        if f.battery_w >= 0:
            b.energy_wh += f.battery_w * cfg.battery_charge_efficiency * h / 3600.0
            c.battery_charge_wh += f.battery_w * h / 3600.0
        else:
            b.energy_wh += f.battery_w / cfg.battery_discharge_efficiency * h / 3600.0
            c.battery_discharge_wh += -f.battery_w * h / 3600.0
        c.pv_wh += f.pv_w * h / 3600.0
        for i, g in enumerate(self._grid_phase_w(f)):
            if g >= 0:
                c.import_phase_wh[i] += g * h / 3600.0
            else:
                c.export_phase_wh[i] += -g * h / 3600.0
        self._flows = f

    def _grid_phase_w(self, f: _Flows) -> tuple[float, ...]:
        # PV and battery inverters spread evenly over the phases (3-phase inverters).
        even = 1.0 / self.config.phases
        return tuple(
            f.load_phase_w[i] + f.external_phase_w[i] + (f.battery_w - f.pv_w) * even
            for i in range(self.config.phases)
        )

    def _measure(self, at: datetime) -> HomeState:
        """Readings at `at`: the flows of the last substep (what the registers integrated)."""
        cfg = self.config
        f = self._flows
        grid_ph = self._grid_phase_w(f)
        now_s = at.timestamp()
        noise_v = _value_noise(cfg.seed, "volt", now_s, 30.0) * 4.0 - 2.0
        # 0.1 ohm supply impedance: import pulls the voltage down, export pushes it up.
        volts = tuple(
            cfg.nominal_voltage_v + noise_v - 0.1 * g / cfg.nominal_voltage_v for g in grid_ph
        )
        amps = tuple(abs(g) / v for g, v in zip(grid_ph, volts, strict=True))
        hz = cfg.nominal_frequency_hz + (_value_noise(cfg.seed, "hz", now_s, 20.0) - 0.5) * 0.1
        c = self._counters
        even = 1.0 / cfg.phases
        cap = cfg.battery_capacity_wh
        return HomeState(
            at=at,
            pv_available_w=f.pv_available_w,
            pv_w=f.pv_w,
            pv_limit_pct=100.0 if self._pv_limit_pct is None else self._pv_limit_pct,
            load_w=sum(f.load_phase_w),
            external_w=sum(f.external_phase_w),
            battery_w=f.battery_w,
            soc_pct=100.0 * self._battery.energy_wh / cap if cap > 0 else 0.0,
            grid_w=sum(grid_ph),
            grid_phase_w=grid_ph,
            pv_phase_w=tuple([f.pv_w * even] * cfg.phases),
            battery_phase_w=tuple([f.battery_w * even] * cfg.phases),
            voltage_phase_v=volts,
            current_phase_a=amps,
            frequency_hz=hz,
            import_wh=sum(c.import_phase_wh),
            export_wh=sum(c.export_phase_wh),
            import_phase_wh=tuple(c.import_phase_wh),
            export_phase_wh=tuple(c.export_phase_wh),
            pv_energy_wh=c.pv_wh,
            battery_charge_wh=c.battery_charge_wh,
            battery_discharge_wh=c.battery_discharge_wh,
            over_current=any(a > cfg.fuse_a for a in amps),
        )
