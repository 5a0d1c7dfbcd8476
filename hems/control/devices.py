"""ControlledDevices: the capability objects the loop may command, with their roles and limits.

Adapters (Modbus, OCPP, …) hand their objects in here; the loop only ever talks to them through
the `hems.core.capabilities` Protocols.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hems.control.config import ControlConfig
from hems.control.model import BatterySpec, ChargerSpec, LoadSpec, PvSpec, SiteSpec
from hems.core.capabilities import BatteryControl, EvCharger, PvInverter, SwitchableLoad
from hems.core.readings import Role
from hems.errors import ConfigError

Control = BatteryControl | PvInverter | EvCharger | SwitchableLoad


@dataclass(frozen=True, slots=True)
class _Entry:
    role: Role
    control: Control


# Where each rating is written in the device's `devices[]` entry, for the error message.
_FILE_KEY = {
    "max_charge_w": "battery.max_charge_w",
    "max_discharge_w": "battery.max_discharge_w",
    "rated_w": "rated_w",
    "load_power_w": "load.power_w",
}


def _need(value: float | None, device_id: str, key: str) -> float:
    if value is None:
        raise ConfigError(
            f"devices[{device_id}].{_FILE_KEY.get(key, key)}", "is required to control this device"
        )
    return value


def response_delay_s(control: object, dsr: bool = False) -> float:
    """How long the charger may take to follow a new limit, up or down [s].

    GB smart-charge rules let a charger delay a change of rate randomly (up to 600 s) unless
    it is demand-side response; adapters say by how much, as an attribute or a method (the
    OCPP adapter's takes the `dsr` flag). Unknown or unreadable: 0.
    """
    value = getattr(control, "expected_response_delay_s", 0.0)
    try:
        if callable(value):
            try:
                value = value(dsr=dsr)
            except TypeError:  # an adapter whose method takes no flag
                value = value()
        return max(0.0, float(value or 0.0))
    except Exception:  # an adapter bug must not stop registration or a cycle
        return 0.0


class ControlledDevices:
    """Registry of controllable devices keyed by device id."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._batteries: dict[str, BatterySpec] = {}
        self._pvs: dict[str, PvSpec] = {}
        self._chargers: dict[str, ChargerSpec] = {}
        self._loads: dict[str, LoadSpec] = {}

    def _add(self, control: object, proto: type, role: Role) -> str:
        device_id = getattr(control, "device_id", None)
        if not isinstance(device_id, str) or not device_id:
            raise ConfigError("control.devices", f"{control!r} has no device_id")
        if not isinstance(control, proto):
            raise ConfigError(f"devices.{device_id}", f"does not offer {proto.__name__}")
        if device_id in self._entries:
            raise ConfigError(f"devices.{device_id}", "added twice to the control loop")
        self._entries[device_id] = _Entry(role, control)  # type: ignore[arg-type]
        return device_id

    def add_battery(
        self,
        control: BatteryControl,
        *,
        max_charge_w: float,
        max_discharge_w: float,
        phase: int | None = None,
    ) -> None:
        dev = self._add(control, BatteryControl, Role.BATTERY)
        self._batteries[dev] = BatterySpec(
            device_id=dev,
            max_charge_w=max_charge_w,
            max_discharge_w=max_discharge_w,
            modes=frozenset(control.modes),
            phase=phase,
        )

    def add_pv(self, control: PvInverter, *, rated_w: float, phase: int | None = None) -> None:
        """An inverter whose output the loop may limit. One that says it cannot be curtailed
        (`curtailable` False: a SunSpec unit without model 123 or 704) is refused."""
        if getattr(control, "curtailable", True) is False:
            dev_id = getattr(control, "device_id", "?")
            raise ConfigError(f"devices.{dev_id}", "offers no curtailment (no limit control)")
        dev = self._add(control, PvInverter, Role.PV)
        self._pvs[dev] = PvSpec(device_id=dev, rated_w=rated_w, phase=phase)

    def add_charger(
        self,
        control: EvCharger,
        *,
        min_current_a: float = 6.0,
        max_current_a: float = 16.0,
        phases: tuple[int, ...] = (1,),
        phase: int = 1,
    ) -> None:
        dev = self._add(control, EvCharger, Role.EV)
        if min_current_a > max_current_a:
            raise ConfigError(f"devices.{dev}", "min_current_a is above max_current_a")
        self._chargers[dev] = ChargerSpec(
            device_id=dev,
            min_current_a=min_current_a,
            max_current_a=max_current_a,
            phases=tuple(sorted(phases)),
            phase=phase,
            response_delay_s=response_delay_s(control),
        )

    def add_load(
        self,
        control: SwitchableLoad,
        *,
        power_w: float,
        phase: int | None = 1,
        deferrable: bool = True,
    ) -> None:
        dev = self._add(control, SwitchableLoad, Role.LOAD)
        self._loads[dev] = LoadSpec(
            device_id=dev, power_w=power_w, phase=phase, deferrable=deferrable
        )

    @classmethod
    def from_adapters(cls, cfg: ControlConfig, adapters: Iterable[object]) -> ControlledDevices:
        """Register every adapter that can be commanded, by the capability it offers.

        Ratings come from each device's `devices[]` entry through `cfg.device(id)`
        (batteries need battery.max_charge_w and max_discharge_w, PV rated_w, loads
        load.power_w); chargers take their current range and phases from the adapter's own
        config (`adapter.cfg`) where it has one. Meters and other read-only adapters are
        skipped.
        """
        devs = cls()
        for a in adapters:
            devs.register(cfg, a)
        return devs

    def register(self, cfg: ControlConfig, a: object) -> bool:
        """Register one adapter by the capability it offers (see `from_adapters`); False
        for a read-only one (a meter, a PV inverter without curtailment). An inverter with a
        `curtailable` attribute is registered only once it says True (a SunSpec unit whose
        map is read and has model 123 or 704); until then it is measured only."""
        dev_id = getattr(a, "device_id", "?")
        d = cfg.device(dev_id)
        if isinstance(a, BatteryControl):
            self.add_battery(
                a,
                max_charge_w=_need(d.max_charge_w, dev_id, "max_charge_w"),
                max_discharge_w=_need(d.max_discharge_w, dev_id, "max_discharge_w"),
                phase=d.phase,
            )
        elif isinstance(a, PvInverter):
            if getattr(a, "curtailable", True) is not True:
                return False
            self.add_pv(a, rated_w=_need(d.rated_w, dev_id, "rated_w"), phase=d.phase)
        elif isinstance(a, EvCharger):
            ccfg = getattr(a, "cfg", None)
            wired = getattr(ccfg, "phases", 1)
            # Offer 1p/3p switching only where the adapter says the charger honours it;
            # otherwise a "1-phase" limit would be applied on 3 phases: 3x the power.
            limit = getattr(getattr(a, "quirks", None), "limit", None)
            switching = bool(getattr(limit, "phase_switching", False))
            phases = (1, 3) if wired == 3 and switching else (wired,)
            self.add_charger(
                a,
                min_current_a=float(getattr(ccfg, "min_current_a", 6.0)),
                max_current_a=float(getattr(ccfg, "max_current_a", 16.0)),
                phases=phases,
                phase=d.phase or 1,
            )
        elif isinstance(a, SwitchableLoad):
            self.add_load(
                a,
                power_w=_need(d.load_power_w, dev_id, "load_power_w"),
                phase=d.phase,
                deferrable=d.deferrable,
            )
        else:
            return False
        return True

    def spec(self) -> SiteSpec:
        return SiteSpec(
            dict(self._batteries), dict(self._pvs), dict(self._chargers), dict(self._loads)
        )

    def control(self, device_id: str) -> Control:
        return self._entries[device_id].control

    def role(self, device_id: str) -> Role:
        return self._entries[device_id].role

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._entries

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
