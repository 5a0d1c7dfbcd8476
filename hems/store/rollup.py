"""Roll-up maths: pure functions turning raw samples into time buckets.

Power is integrated by sample-and-hold: each sample holds until the next one, but never
longer than `max_hold_ms` (a gap is a gap, not a flat line), and never past the bucket end.
The positive and negative parts are integrated apart so 30-min import and export energy
stay separate, as GB settlement does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MINUTE_MS = 60_000
HALF_HOUR_MS = 1_800_000
_MS_PER_HOUR = 3_600_000


@dataclass(frozen=True, slots=True)
class Bucket:
    start_ms: int
    n: int
    mean: float
    min: float
    max: float
    last: float
    pos_wh: float
    neg_wh: float


def floor_ms(at_ms: int, width_ms: int) -> int:
    return at_ms - at_ms % width_ms


def bucket_samples(
    samples: Sequence[tuple[int, float]],
    width_ms: int,
    max_hold_ms: int,
    first_bucket_ms: int | None = None,
    integrate: bool = True,
) -> list[Bucket]:
    """Bucket (at_ms, value) samples, sorted by time, into buckets of `width_ms`.

    Samples before `first_bucket_ms` only contribute their hold into it (they are context
    fetched so a bucket's first seconds are not lost). `integrate` turns on the energy
    integration [Wh] for power series.
    """
    if not samples:
        return []
    first = floor_ms(samples[0][0], width_ms) if first_bucket_ms is None else first_bucket_ms
    stats: dict[int, list[float]] = {}  # start -> [n, sum, min, max, last, pos_wh, neg_wh]
    for i, (at_ms, value) in enumerate(samples):
        if at_ms >= first:
            start = floor_ms(at_ms, width_ms)
            s = stats.setdefault(start, [0, 0.0, value, value, value, 0.0, 0.0])
            s[0] += 1
            s[1] += value
            s[2] = min(s[2], value)
            s[3] = max(s[3], value)
            s[4] = value
        if not integrate:
            continue
        hold_end = at_ms + max_hold_ms
        if i + 1 < len(samples):
            hold_end = min(hold_end, samples[i + 1][0])
        t = max(at_ms, first)
        while t < hold_end:
            start = floor_ms(t, width_ms)
            seg_end = min(hold_end, start + width_ms)
            wh = value * (seg_end - t) / _MS_PER_HOUR
            s = stats.get(start)
            if s is None:
                # A hold reaching into a bucket that has no sample of its own yet.
                s = stats.setdefault(start, [0, 0.0, value, value, value, 0.0, 0.0])
            if wh >= 0:
                s[5] += wh
            else:
                s[6] -= wh
            t = seg_end
    out = []
    for start in sorted(stats):
        n, total, lo, hi, last, pos, neg = stats[start]
        if n == 0:
            # Only a hold reached this bucket: its mean is the held value.
            out.append(Bucket(int(start), 0, lo, lo, hi, last, pos, neg))
        else:
            out.append(Bucket(int(start), int(n), total / n, lo, hi, last, pos, neg))
    return out


def merge_buckets(buckets: Sequence[Bucket], width_ms: int) -> list[Bucket]:
    """Merge finer buckets (e.g. 1-min) into coarser ones (e.g. 30-min)."""
    groups: dict[int, list[Bucket]] = {}
    for b in sorted(buckets, key=lambda b: b.start_ms):
        groups.setdefault(floor_ms(b.start_ms, width_ms), []).append(b)
    out = []
    for start, group in sorted(groups.items()):
        n = sum(b.n for b in group)
        weighted = [b for b in group if b.n > 0] or group
        weights = [b.n if n else 1 for b in weighted]
        mean = sum(b.mean * w for b, w in zip(weighted, weights, strict=True)) / sum(weights)
        out.append(
            Bucket(
                start,
                n,
                mean,
                min(b.min for b in group),
                max(b.max for b in group),
                group[-1].last,
                sum(b.pos_wh for b in group),
                sum(b.neg_wh for b in group),
            )
        )
    return out


def settlement_periods(day: date, tz: ZoneInfo, period_s: int = 1800) -> list[datetime]:
    """UTC starts of the settlement periods of one local day, in order: 48, or 46/50 on
    clock changes (GB settlement periods are the half hours of the local day).

    `period_s` other than 30 min serves the flexibility baselines; only whole periods count.
    """
    start = datetime.combine(day, time(0), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)
    return periods_between(start, end, period_s)


def periods_between(start: datetime, end: datetime, period_s: int) -> list[datetime]:
    """Starts of the whole `period_s` periods from `start` up to `end`."""
    n = int((end - start).total_seconds()) // period_s
    return [start + timedelta(seconds=i * period_s) for i in range(n)]
