"""DSMR P1 smart meters (NL/BE/LU and kin): telegrams over a serial port or a TCP serial
server (`socket://host:port`), parsed and CRC-checked with dsmr-parser.

`parse_telegram` is pure: a telegram's text in, a `P1Sample` out, or `P1Error` with a one-line
reason (bad CRC, incomplete, malformed value). `P1Meter.run()` keeps the connection, frames
telegrams, publishes readings (grid power + = import, cumulative import/export energy, per-phase
values when present) and feeds the half-hour recorder through the SiteState listener.
"""

from __future__ import annotations

import asyncio
import decimal
import math
from dataclasses import dataclass, field
from typing import Any

import structlog
from dsmr_parser import telegram_specifications as specs
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.parsers import TelegramParser

from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.devices.health import PushHealth
from hems.devices.meters.config import P1MeterConfig
from hems.errors import HemsError

log = structlog.get_logger(__name__)

# Decrypted (plain-text) telegrams only: encrypted P1 (DLMS frames) is not supported yet.
_SAGEMCOM_PLAIN = {**specs.SAGEMCOM_T210_D_R, "general_global_cipher": False}

SPECS: dict[str, Any] = {
    "2.2": specs.V2_2,
    "3": specs.V3,
    "4": specs.V4,
    "4+": specs.V5,
    "5": specs.V5,
    "5B": specs.BELGIUM_FLUVIUS,
    "5L": specs.LUXEMBOURG_SMARTY,
    "5S": specs.SWEDEN,
    "Q3D": specs.Q3D,
    "ISKRA_IE": specs.ISKRA_IE,
    "5EONHU": specs.EON_HUNGARY,
    "SAGEMCOM_T210_D_R": _SAGEMCOM_PLAIN,
}


class P1Error(HemsError):
    """A telegram that must not be used, with the reason."""


@dataclass(frozen=True, slots=True)
class P1Sample:
    power_w: float  # + import
    import_wh: float | None  # cumulative, all tariffs
    export_wh: float | None
    phases: dict[Quantity, float] = field(default_factory=dict)


def _num(telegram: Any, name: str) -> float | None:
    obj = getattr(telegram, name, None)
    if obj is None:
        return None
    value = obj.value
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError, decimal.InvalidOperation):
        raise P1Error(f"{name}: not a number ({value!r})") from None
    if not math.isfinite(out):
        raise P1Error(f"{name}: not finite")
    unit = (obj.unit or "").lower()
    return out * 1000 if unit in ("kw", "kwh") else out


def _total(telegram: Any, total: str, tariffs: tuple[str, ...]) -> float | None:
    value = _num(telegram, total)
    if value is not None:
        return value
    parts = [_num(telegram, t) for t in tariffs]
    known = [p for p in parts if p is not None]
    return round(sum(known), 3) if known else None


# A DSMR telegram is 1-3 KiB (more with M-Bus devices); a stream that runs far past that
# without a complete telegram is noise or an attack and must not grow the buffer for ever.
MAX_TELEGRAM_CHARS = 16 * 1024


def feed(buffer: TelegramBuffer, data: str) -> tuple[list[str], int]:
    """Append `data`; return the complete telegrams and how many characters were dropped
    because no complete telegram arrived within MAX_TELEGRAM_CHARS."""
    buffer.append(data)
    telegrams = list(buffer.get_all())
    pending = buffer._buffer  # dsmr-parser keeps the unframed rest here
    if len(pending) <= MAX_TELEGRAM_CHARS:
        return telegrams, 0
    start = pending.rfind("/")  # keep a telegram that may be starting now
    keep = pending[start:] if start >= 0 and len(pending) - start <= MAX_TELEGRAM_CHARS else ""
    buffer._buffer = keep
    return telegrams, len(pending) - len(keep)


def parse_telegram(text: str, dsmr_version: str = "5") -> P1Sample:
    """One complete telegram (from '/' to the CRC line) to a sample. Raises P1Error."""
    if len(text) > MAX_TELEGRAM_CHARS:
        raise P1Error(f"telegram of {len(text)} characters exceeds {MAX_TELEGRAM_CHARS}")
    try:
        parser = TelegramParser(SPECS[dsmr_version])
    except KeyError:
        raise P1Error(f"unknown DSMR version {dsmr_version!r}") from None
    try:
        telegram = parser.parse(text)
    except InvalidChecksumError as exc:
        raise P1Error(f"CRC mismatch: {exc}") from None
    except ParseError as exc:
        raise P1Error(f"incomplete or malformed telegram: {exc}") from None
    except (decimal.InvalidOperation, ArithmeticError, ValueError, TypeError, IndexError) as exc:
        raise P1Error(f"malformed value in telegram ({type(exc).__name__})") from None
    usage = _num(telegram, "CURRENT_ELECTRICITY_USAGE")
    delivery = _num(telegram, "CURRENT_ELECTRICITY_DELIVERY")
    if usage is None:
        raise P1Error("no instantaneous power (1-0:1.7.0) in telegram")
    power_w = usage - (delivery or 0.0)
    import_wh = _total(
        telegram,
        "ELECTRICITY_IMPORTED_TOTAL",
        ("ELECTRICITY_USED_TARIFF_1", "ELECTRICITY_USED_TARIFF_2"),
    )
    export_wh = _total(
        telegram,
        "ELECTRICITY_EXPORTED_TOTAL",
        ("ELECTRICITY_DELIVERED_TARIFF_1", "ELECTRICITY_DELIVERED_TARIFF_2"),
    )
    phases: dict[Quantity, float] = {}
    for n, p_q, i_q in (
        (1, Quantity.POWER_L1_W, Quantity.CURRENT_L1_A),
        (2, Quantity.POWER_L2_W, Quantity.CURRENT_L2_A),
        (3, Quantity.POWER_L3_W, Quantity.CURRENT_L3_A),
    ):
        pos = _num(telegram, f"INSTANTANEOUS_ACTIVE_POWER_L{n}_POSITIVE")
        neg = _num(telegram, f"INSTANTANEOUS_ACTIVE_POWER_L{n}_NEGATIVE")
        if pos is not None:
            phases[p_q] = pos - (neg or 0.0)
        current = _num(telegram, f"INSTANTANEOUS_CURRENT_L{n}")
        if current is not None:
            phases[i_q] = current
    voltage = _num(telegram, "INSTANTANEOUS_VOLTAGE_L1")
    if voltage is not None:
        phases[Quantity.VOLTAGE_V] = voltage
    return P1Sample(round(power_w, 3), import_wh, export_wh, phases)


def sample_readings(device_id: str, sample: P1Sample, at: Any) -> list[Reading]:
    out = [Reading(device_id, Quantity.POWER_W, sample.power_w, at)]
    if sample.import_wh is not None:
        out.append(Reading(device_id, Quantity.ENERGY_IMPORT_WH, sample.import_wh, at))
    if sample.export_wh is not None:
        out.append(Reading(device_id, Quantity.ENERGY_EXPORT_WH, sample.export_wh, at))
    out.extend(Reading(device_id, q, v, at) for q, v in sample.phases.items())
    return out


class P1Meter:
    """Reads one P1 port until cancelled; reconnects with capped backoff."""

    def __init__(self, cfg: P1MeterConfig, state: SiteState, clock: Clock) -> None:
        self.cfg = cfg
        self.device_id = cfg.id
        self._state = state
        self._clock = clock
        self.health = PushHealth(cfg.id, state, "p1", "telegram")
        state.register_device(cfg.id, cfg.role, stale_after_s=cfg.stale_after_s)

    @property
    def telegrams_ok(self) -> int:
        return self.health.accepted

    @property
    def telegrams_rejected(self) -> int:
        return self.health.rejected

    @property
    def last_error(self) -> str | None:
        return self.health.last_error

    async def run(self) -> None:
        backoff_s = 1.0
        while True:
            raise_if_cancelling()
            try:
                await self._session()
                reason = "connection closed by the P1 port"
            except Exception as exc:  # any link failure: reconnect, never crash
                reason = f"{type(exc).__name__}: {exc}"
            self.health.link_down(reason)
            await self._clock.sleep(backoff_s)
            backoff_s = min(self.cfg.reconnect_max_s, backoff_s * 2)

    async def _open(self) -> tuple[asyncio.StreamReader, Any]:
        port = self.cfg.port
        if port.startswith("socket://"):
            host, _, tcp_port = port.removeprefix("socket://").rpartition(":")
            return await asyncio.open_connection(host.strip("[]"), int(tcp_port))
        from dsmr_parser.clients.settings import (
            SERIAL_SETTINGS_V2_2,
            SERIAL_SETTINGS_V4,
            SERIAL_SETTINGS_V5,
        )
        from serialx import open_serial_connection

        settings = (
            SERIAL_SETTINGS_V2_2
            if self.cfg.dsmr_version in ("2.2", "3")
            else SERIAL_SETTINGS_V4
            if self.cfg.dsmr_version in ("4", "4+")
            else SERIAL_SETTINGS_V5
        )
        return await open_serial_connection(url=port, **dict(settings))

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(self._open(), timeout=10)
        buffer = TelegramBuffer()
        # Meters send every 1 s (DSMR 5) or 10 s (DSMR 4): a long silence is a dead link.
        silence_s = max(30.0, 3 * self.cfg.stale_after_s)
        try:
            while True:
                data = await asyncio.wait_for(reader.read(4096), timeout=silence_s)
                raise_if_cancelling()
                if not data:
                    return
                telegrams, dropped = feed(buffer, data.decode("latin-1"))
                if dropped:
                    self.health.input_rejected(
                        f"{dropped} characters without a complete telegram dropped"
                    )
                for telegram in telegrams:
                    self.handle(telegram)
        finally:
            writer.close()

    def handle(self, telegram: str) -> bool:
        """Parse one framed telegram and publish it; a bad one is counted and dropped."""
        try:
            sample = parse_telegram(telegram, self.cfg.dsmr_version)
            readings = sample_readings(self.device_id, sample, self._clock.now())
        except (P1Error, ValueError) as exc:
            self.health.input_rejected(str(exc))
            return False
        self._state.publish(readings)
        self.health.input_accepted()
        return True
