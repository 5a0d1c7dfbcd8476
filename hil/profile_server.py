"""Serve any shipped device profile's register map over real Modbus TCP (pymodbus server).

The server takes engineering values per register name (in hems conventions: W with + import /
+ charging / + producing, Wh, %, …), encodes them the way the device would (scale, scale
register exponent, word order, sign inversion, magnitude-plus-direction registers) and serves
them from a pymodbus `SimDevice` with separate holding and input tables. Addresses the profile
does not define are holes that answer exception 2, as on real devices. Faults: `exceptions`
(address -> exception code for any request touching it) and `latency_s` (delay per reply).
Writes to writable registers land in the datastore (so read-back verification works) and
are recorded in `writes` for assertions.

`demo_values(profile)` gives a plausible, consistent set of values for any profile, so a test
can serve every profile and check the adapter decodes each back. Values come from a simple
callable (`update(values)`), not from the physics in `hil/home.py`, so any profile can be
served on its own.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Mapping
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from hems.core.readings import Quantity, Role
from hems.devices.modbus.profile import Profile, Register
from hil.modbus_sim import SimTcpServer

__all__ = ["ProfileServer", "demo_values", "encode_register", "home_values", "register_image"]

_WRITE_FCS = frozenset({6, 16})
_FC = {"holding": 3, "input": 4}
DEFAULT_SF = -1  # exponent served in every scale register

# Plausible values per (role, quantity); signs in hems conventions.
_DEMO: dict[tuple[Role | None, Quantity], float] = {
    (Role.GRID, Quantity.POWER_W): 1520.0,
    (Role.BATTERY, Quantity.POWER_W): -800.0,
    (Role.PV, Quantity.POWER_W): 2300.0,
    (Role.LOAD, Quantity.POWER_W): 640.0,
    (None, Quantity.ENERGY_IMPORT_WH): 12_345_000.0,
    (None, Quantity.ENERGY_EXPORT_WH): 2_345_000.0,
    (None, Quantity.SOC_PCT): 57.0,
    (None, Quantity.VOLTAGE_V): 230.0,
    (None, Quantity.CURRENT_A): 5.5,
    (None, Quantity.CURRENT_L1_A): 4.5,
    (None, Quantity.CURRENT_L2_A): 3.5,
    (None, Quantity.CURRENT_L3_A): 2.5,
    (None, Quantity.POWER_L1_W): 600.0,
    (None, Quantity.POWER_L2_W): 500.0,
    (None, Quantity.POWER_L3_W): 420.0,
    (None, Quantity.FREQUENCY_HZ): 50.0,
    (None, Quantity.TEMPERATURE_C): 35.5,
}


def demo_values(profile: Profile) -> dict[str, float | str]:
    """A consistent value for every register of a profile (engineering units)."""
    out: dict[str, float | str] = {}
    sf_regs = {r.scale_register for r in profile.registers.values() if r.scale_register}
    add_terms = {t for d in profile.derived.values() for t in d.add}
    sub_terms = {t for d in profile.derived.values() for t in d.subtract}
    ident = profile.identify
    for name, reg in profile.registers.items():
        if reg.type == "string":
            prefix = ident.prefixes[0] if ident and ident.prefixes else ""
            out[name] = (prefix + "HIL0001")[: 2 * (reg.length or 1)]
        elif name in sf_regs:
            out[name] = float(DEFAULT_SF)
        elif reg.quantity is not None:
            out[name] = _DEMO.get((reg.role, reg.quantity), _DEMO.get((None, reg.quantity), 1.0))
        elif name in add_terms:
            out[name] = 1000.0
        elif name in sub_terms:
            out[name] = 250.0
        else:
            out[name] = 0.0
        if ident and ident.register_name == name and not isinstance(out[name], str):
            if ident.values:
                out[name] = float(ident.values[0])
            elif ident.range and not ident.range[0] <= float(out[name]) <= ident.range[1]:
                out[name] = float(math.ceil(ident.range[0]))
    _set_directions(profile, out)
    return out


def _set_directions(profile: Profile, out: dict[str, float | str]) -> None:
    """A magnitude register's direction comes from its sign register: set it to match."""
    for name, reg in profile.registers.items():
        if reg.sign_from is not None:
            value = out[name]
            negative = isinstance(value, float) and value < 0
            sf = reg.sign_from
            out[sf.register_name] = float(
                (sf.values[0] if sf.values else sf.mask) if negative else 0
            )


def home_values(profile: Profile, state: Any) -> dict[str, float | str]:
    """Register values for a profile from the simulated home (`hil.home.HomeState`).

    Quantity registers take the home's value for their (role, quantity); a derived value is
    split over its terms (import/export, charge/discharge) unless its terms are themselves
    quantity registers (per-phase powers summed). Everything else keeps `demo_values`.
    """
    phase = lambda t, i: float(t[i]) if i < len(t) else 0.0  # noqa: E731
    targets: dict[tuple[Role | None, Quantity], float] = {
        (Role.GRID, Quantity.POWER_W): state.grid_w,
        (Role.PV, Quantity.POWER_W): state.pv_w,
        (Role.BATTERY, Quantity.POWER_W): state.battery_w,
        (Role.BATTERY, Quantity.SOC_PCT): state.soc_pct,
        (Role.GRID, Quantity.ENERGY_IMPORT_WH): state.import_wh,
        (Role.GRID, Quantity.ENERGY_EXPORT_WH): state.export_wh,
        (Role.GRID, Quantity.FREQUENCY_HZ): state.frequency_hz,
        (Role.GRID, Quantity.VOLTAGE_V): phase(state.voltage_phase_v, 0),
        (Role.GRID, Quantity.POWER_L1_W): phase(state.grid_phase_w, 0),
        (Role.GRID, Quantity.POWER_L2_W): phase(state.grid_phase_w, 1),
        (Role.GRID, Quantity.POWER_L3_W): phase(state.grid_phase_w, 2),
        (Role.GRID, Quantity.CURRENT_L1_A): phase(state.current_phase_a, 0),
        (Role.GRID, Quantity.CURRENT_L2_A): phase(state.current_phase_a, 1),
        (Role.GRID, Quantity.CURRENT_L3_A): phase(state.current_phase_a, 2),
        (Role.GRID, Quantity.CURRENT_A): phase(state.current_phase_a, 0),
    }
    out = demo_values(profile)
    quantity_regs = set()
    for name, reg in profile.registers.items():
        key = (reg.role, reg.quantity)
        if reg.quantity is not None and key in targets:
            out[name] = round(float(targets[key]), 1)
            quantity_regs.add(name)
    for d in profile.derived.values():
        value = targets.get((d.role, d.quantity))
        terms = [*d.add, *d.subtract]
        if value is None or any(t in quantity_regs for t in terms):
            continue
        for t in terms:
            out[t] = 0.0
        if d.subtract:
            out[d.add[0]] = round(max(value, 0.0), 1)
            out[d.subtract[0]] = round(max(-value, 0.0), 1)
        else:
            out[d.add[0]] = round(value, 1)
    _set_directions(profile, out)
    return out


def encode_register(
    profile: Profile, reg: Register, value: float | str, exponent: int = 0
) -> list[int]:
    """Words a device would hold for `value` (engineering, hems sign convention)."""
    if reg.type == "string":
        data = str(value).encode("ascii").ljust(2 * (reg.length or 0), b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    v = float(value)
    if reg.sign_from is not None:
        v = abs(v)
    if reg.invert:
        v = -v
    if reg.scale is not None:
        v /= reg.scale
    if reg.scale_register is not None:
        v /= 10.0**exponent
    order = reg.word_order or profile.word_order
    if reg.type == "float32":
        words = list(struct.unpack(">HH", struct.pack(">f", v)))
    else:
        width = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4}[
            reg.type
        ]
        raw = round(v)
        bits = 16 * width
        if reg.type.startswith("u") and not 0 <= raw < 1 << bits:
            raise ValueError(f"{reg.type} cannot hold {raw}")
        raw &= (1 << bits) - 1
        words = [(raw >> (16 * (width - 1 - i))) & 0xFFFF for i in range(width)]
    return words if order == "big" else list(reversed(words))


def register_image(
    profile: Profile, values: Mapping[str, float | str]
) -> dict[str, dict[int, int]]:
    """table -> address -> word for every register that has a value."""
    image: dict[str, dict[int, int]] = {"holding": {}, "input": {}}
    for name, reg in profile.registers.items():
        if name not in values:
            continue
        exponent = 0
        if reg.scale_register is not None:
            exponent = int(values.get(reg.scale_register, DEFAULT_SF))
        words = encode_register(profile, reg, values[name], exponent)
        for i, w in enumerate(words):
            image[reg.table][reg.address + i] = w
    return image


def _blocks(table: dict[int, int]) -> list[SimData]:
    """Contiguous runs of defined addresses; everything else stays a hole (exception 2)."""
    out: list[SimData] = []
    run: list[int] = []
    start = -1
    for address in sorted(table):
        if run and address != start + len(run):
            out.append(SimData(start, values=run, datatype=DataType.REGISTERS))
            run = []
        if not run:
            start = address
        run.append(table[address])
    if run:
        out.append(SimData(start, values=run, datatype=DataType.REGISTERS))
    return out


class ProfileServer(SimTcpServer):
    """One profile served at one unit id on a loopback Modbus TCP port (0 = a free one)."""

    def __init__(
        self,
        profile: Profile,
        values: Mapping[str, float | str] | None = None,
        *,
        unit_id: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(host, port)
        self.profile = profile
        self.values: dict[str, float | str] = dict(values or demo_values(profile))
        self.unit_id = profile.default_unit_id if unit_id is None else unit_id
        self.requests = 0
        self.writes: list[tuple[int, list[int]]] = []  # (address, words) in arrival order
        # Fault injection: answer requests touching these addresses with this exception code.
        self.exceptions: dict[int, ExcCodes] = {}
        self.latency_s = latency_s  # added before every reply
        self._image = register_image(profile, self.values)

    def _devices(self) -> list[SimDevice]:
        # pymodbus needs at least one entry per table; park a dummy where the profile has none.
        holding = _blocks(self._image["holding"]) or [
            SimData(0, values=[0], datatype=DataType.REGISTERS)
        ]
        inputs = _blocks(self._image["input"]) or [
            SimData(0, values=[0], datatype=DataType.REGISTERS)
        ]
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return [
            SimDevice(
                id=self.unit_id, simdata=(bits, list(bits), holding, inputs), action=self._action
            )
        ]

    async def update(self, values: Mapping[str, float | str]) -> None:
        """Change served values (engineering units); only the given registers change."""
        self.values.update(values)
        image = register_image(self.profile, self.values)
        assert self._server is not None
        for table, words in image.items():
            for address, word in words.items():
                if self._image[table].get(address) != word:
                    await self._server.async_setValues(self.unit_id, _FC[table], address, [word])
        self._image = image

    async def _action(
        self,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: Any,
    ) -> ExcCodes | None:
        self.requests += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        for a in range(address, address + max(count, 1)):
            if a in self.exceptions:
                return self.exceptions[a]
        if set_values is not None and func_code in _WRITE_FCS:
            words = [int(v) for v in set_values]
            for i in range(len(words)):
                reg = self._register_at(address + i)
                if reg is None or not reg.writable:
                    return ExcCodes.ILLEGAL_ADDRESS
            self.writes.append((address, words))
        return None

    def _register_at(self, address: int) -> Register | None:
        for reg in self.profile.registers.values():
            if reg.table == "holding" and reg.address <= address < reg.address + reg.width:
                return reg
        return None
