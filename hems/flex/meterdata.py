"""Half-hourly meter data for baselines: CSV parsing and the canonical form that is hashed.

CSV (for `hems baseline`): a header `period_start,import_kwh[,export_kwh]`, then one row per
period; `period_start` is ISO 8601 with a UTC offset on a period boundary; an empty energy
cell means missing (NaN), never zero.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from hems.errors import HemsError
from hems.store.timeseries import from_ms

Quantity = Literal["import", "export", "net_import"]
CANONICAL_FORMAT = "hems-meter-csv/1"


class MeterDataError(HemsError):
    """Bad meter data; the message names the line and column."""

    def __init__(self, source: str, line: int, column: str, problem: str) -> None:
        super().__init__(f"{source} line {line}, column {column}: {problem}")
        self.line = line
        self.column = column


@dataclass(slots=True)
class MeterData:
    """Energy per period [kWh], keyed by aware UTC period start. NaN or absent = missing."""

    period_s: int = 1800
    import_kwh: dict[datetime, float] = field(default_factory=dict)
    export_kwh: dict[datetime, float] = field(default_factory=dict)
    estimated: set[datetime] = field(default_factory=set)  # interpolated by the meter area

    def series(self, quantity: Quantity) -> Mapping[datetime, float]:
        if quantity == "import":
            return self.import_kwh
        if quantity == "export":
            return self.export_kwh
        # net import: import - export; a period missing either side is missing.
        out: dict[datetime, float] = {}
        for t, imp in self.import_kwh.items():
            exp = self.export_kwh.get(t, math.nan)
            out[t] = imp - exp
        return out

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[int, float | None, float | None, str]],
        *,
        use_estimated: bool = True,
        period_s: int = 1800,
    ) -> MeterData:
        """From `(period_start_ms, import_wh, export_wh, quality)` rows of `meter_intervals`
        (migration 0002: quality 'actual', 'estimated' or 'missing'). 'missing' and NULL
        energies are gaps; 'estimated' counts unless `use_estimated` is False."""
        data = cls(period_s=period_s)
        for start_ms, imp_wh, exp_wh, quality in rows:
            t = from_ms(start_ms)
            gap = quality == "missing" or (quality == "estimated" and not use_estimated)
            data.import_kwh[t] = math.nan if gap or imp_wh is None else imp_wh / 1000.0
            data.export_kwh[t] = math.nan if gap or exp_wh is None else exp_wh / 1000.0
            if quality == "estimated" and use_estimated:
                data.estimated.add(t)
        return data


def _number(text: str, source: str, line: int, column: str) -> float:
    text = text.strip()
    if text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise MeterDataError(source, line, column, f"not a number: {text!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise MeterDataError(
            source, line, column, f"not a finite number: {text!r} (leave empty for missing)"
        )
    if value < 0:
        raise MeterDataError(source, line, column, f"must be >= 0 kWh, got {value}")
    return value


def parse_csv(text: str, source: str = "data", period_s: int = 1800) -> MeterData:
    """Parse meter CSV text. Raises MeterDataError naming the line and column."""
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    data = MeterData(period_s=period_s)
    has_export = False
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            if header[:2] != ["period_start", "import_kwh"] or header[2:] not in (
                [],
                ["export_kwh"],
            ):
                raise MeterDataError(
                    source, line, "header",
                    f"expected 'period_start,import_kwh[,export_kwh]', got {','.join(row)!r}",
                )  # fmt: skip
            has_export = len(header) == 3
            continue
        if len(row) != len(header):
            col = header[len(row)] if len(row) < len(header) else f"{len(row)}"
            raise MeterDataError(
                source, line, col, f"expected {len(header)} columns, got {len(row)}"
            )
        raw_t = row[0].strip()
        try:
            t = datetime.fromisoformat(raw_t)
        except ValueError:
            raise MeterDataError(
                source, line, "period_start", f"not an ISO 8601 time: {raw_t!r}"
            ) from None
        if t.tzinfo is None:
            raise MeterDataError(source, line, "period_start", f"needs a UTC offset: {raw_t!r}")
        t = t.astimezone(UTC)
        if int(t.timestamp()) % period_s or t.microsecond:
            raise MeterDataError(
                source, line, "period_start", f"{raw_t} is not on a {period_s // 60}-min boundary"
            )
        if t in data.import_kwh:
            raise MeterDataError(source, line, "period_start", f"period {raw_t} appears twice")
        data.import_kwh[t] = _number(row[1], source, line, "import_kwh")
        data.export_kwh[t] = _number(row[2], source, line, "export_kwh") if has_export else math.nan
    if header is None:
        raise MeterDataError(source, 1, "header", "file is empty")
    if not data.import_kwh:
        raise MeterDataError(source, reader.line_num, "period_start", "no data rows")
    return data


def _fmt(v: float | None) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.6f}"


def canonical_bytes(data: MeterData, periods: Iterable[datetime]) -> bytes:
    """The canonical text of the meter data for `periods`, the input of the report hash.

    Format "hems-meter-csv/1": a header line, then per period in time order
    `YYYY-MM-DDTHH:MM:SSZ,<import kWh>,<export kWh>` with 6 decimals, empty for missing,
    LF line ends, UTF-8. Anyone with the CSV can rebuild it and check the hash.
    """
    lines = ["period_start,import_kwh,export_kwh"]
    for t in sorted(set(periods)):
        stamp = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{stamp},{_fmt(data.import_kwh.get(t))},{_fmt(data.export_kwh.get(t))}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def meter_hash(data: MeterData, periods: Iterable[datetime]) -> str:
    """SHA-256 (hex) of `canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(data, periods)).hexdigest()
