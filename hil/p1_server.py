"""A DSMR 5 P1 port on loopback TCP: streams valid telegrams (correct CRC16) every second.

Like a serial-to-TCP server on a real meter's P1 port, it starts sending to every client as
soon as it connects. Values come from a callable returning `P1Values` (so the HIL rig can
feed it the simulated home's grid meter), the interval is configurable, and
`corrupt_every=N` flips a digit in every Nth telegram without fixing the CRC (fault
injection: the reader must drop it and carry on).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self
from zoneinfo import ZoneInfo

__all__ = ["P1Server", "P1Values", "build_telegram", "crc16", "p1_values_from_home"]

_NL = ZoneInfo("Europe/Amsterdam")


@dataclass(frozen=True, slots=True)
class P1Values:
    at: datetime  # aware
    power_w: float  # + import, - export
    import_t1_wh: float = 0.0
    import_t2_wh: float = 0.0
    export_t1_wh: float = 0.0
    export_t2_wh: float = 0.0
    phase_power_w: tuple[float, float, float] | None = None  # + import per phase
    voltage_v: tuple[float, float, float] = (230.0, 230.0, 230.0)
    tariff: int = 2
    equipment_id: str = "4849484C31323334353637383930"  # "HIL1234567890" in hex, as meters do
    extra_lines: list[str] = field(default_factory=list)


def p1_values_from_home(state: Any) -> P1Values:
    """Telegram values from the simulated home (`hil.home.HomeState`): all energy on tariff 1."""
    phases = tuple(state.grid_phase_w) + (0.0,) * (3 - len(state.grid_phase_w))
    volts = tuple(state.voltage_phase_v) + (230.0,) * (3 - len(state.voltage_phase_v))
    return P1Values(
        at=state.at,
        power_w=state.grid_w,
        import_t1_wh=state.import_wh,
        export_t1_wh=state.export_wh,
        phase_power_w=phases[:3],
        voltage_v=volts[:3],
    )


def crc16(data: bytes) -> int:
    """CRC16/ARC (poly 0xA001 reflected, init 0) over '/'..'!' inclusive, as DSMR 5 specifies."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _kw(w: float) -> str:
    return f"{abs(w) / 1000:06.3f}"


def _kwh(wh: float) -> str:
    return f"{wh / 1000:010.3f}"


def build_telegram(v: P1Values) -> str:
    """One DSMR 5.0 telegram, CRLF line ends, with its CRC line."""
    local = v.at.astimezone(_NL)
    stamp = local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")
    imp_w, exp_w = max(v.power_w, 0.0), max(-v.power_w, 0.0)
    phases = v.phase_power_w or (v.power_w, 0.0, 0.0)
    lines = [
        "/HIL5\\2HEMS-P1-SIM",
        "",
        "1-3:0.2.8(50)",
        f"0-0:1.0.0({stamp})",
        f"0-0:96.1.1({v.equipment_id})",
        f"1-0:1.8.1({_kwh(v.import_t1_wh)}*kWh)",
        f"1-0:1.8.2({_kwh(v.import_t2_wh)}*kWh)",
        f"1-0:2.8.1({_kwh(v.export_t1_wh)}*kWh)",
        f"1-0:2.8.2({_kwh(v.export_t2_wh)}*kWh)",
        f"0-0:96.14.0({v.tariff:04d})",
        f"1-0:1.7.0({_kw(imp_w)}*kW)",
        f"1-0:2.7.0({_kw(exp_w)}*kW)",
        "0-0:96.7.21(00000)",
        "0-0:96.7.9(00000)",
        "1-0:99.97.0(0)(0-0:96.7.19)",
        "1-0:32.32.0(00000)",
        "1-0:52.32.0(00000)",
        "1-0:72.32.0(00000)",
        "1-0:32.36.0(00000)",
        "1-0:52.36.0(00000)",
        "1-0:72.36.0(00000)",
        "0-0:96.13.0()",
        f"1-0:32.7.0({v.voltage_v[0]:06.1f}*V)",
        f"1-0:52.7.0({v.voltage_v[1]:06.1f}*V)",
        f"1-0:72.7.0({v.voltage_v[2]:06.1f}*V)",
    ]
    for code, (p, u) in zip(("31", "51", "71"), zip(phases, v.voltage_v, strict=True), strict=True):
        lines.append(f"1-0:{code}.7.0({abs(p) / u:03.0f}*A)")
    for code, p in zip(("21", "41", "61"), phases, strict=True):
        lines.append(f"1-0:{code}.7.0({_kw(max(p, 0.0))}*kW)")
    for code, p in zip(("22", "42", "62"), phases, strict=True):
        lines.append(f"1-0:{code}.7.0({_kw(max(-p, 0.0))}*kW)")
    lines.extend(v.extra_lines)
    body = "\r\n".join(lines) + "\r\n!"
    return f"{body}{crc16(body.encode('ascii')):04X}\r\n"


class P1Server:
    """Loopback TCP server streaming telegrams to every connected client."""

    def __init__(
        self,
        values: Callable[[], P1Values],
        *,
        interval_s: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        corrupt_every: int = 0,
    ) -> None:
        self._values = values
        self.interval_s = interval_s
        self.host = host
        self._want_port = port
        self.corrupt_every = corrupt_every
        self.port: int | None = None
        self.sent = 0
        self.clients = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._want_port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()
            self._server = None

    async def drop_clients(self) -> None:
        """Fault injection: close every client connection (the server keeps listening)."""
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.clients += 1
        try:
            while True:
                telegram = build_telegram(self._values())
                self.sent += 1
                if self.corrupt_every and self.sent % self.corrupt_every == 0:
                    # A changed digit with the old CRC: what line noise does to a telegram.
                    telegram = telegram.replace("1-0:1.8.1(0", "1-0:1.8.1(9", 1)
                writer.write(telegram.encode("ascii"))
                await writer.drain()
                await asyncio.sleep(self.interval_s)
        except ConnectionError:
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
