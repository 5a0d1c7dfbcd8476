"""Energy counters integrated from power readings, for devices that publish no counter of
their own (no battery driver publishes charge/discharge energy; hems.core.quantities).

Sample-and-hold, as the store's roll-ups: each power sample holds until the next one of the
same device, but never longer than `max_hold_s` (a gap is a gap, not a flat line). The
positive part (+: charging) and the negative part (−: discharging) are summed apart, so both
counters only ever increase. They start at 0 when the daemon starts: Home Assistant reads a
`total_increasing` counter that drops as a new meter cycle, so its Energy dashboard's sums
carry on across restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class SplitEnergy:
    """Energy in (+) and out (−) of a set of devices [Wh] since the counter started."""

    max_hold_s: float = 60.0
    positive_wh: float = 0.0
    negative_wh: float = 0.0
    _last: dict[str, tuple[datetime, float]] = field(default_factory=dict)

    def add(self, device_id: str, at: datetime, power_w: float) -> None:
        """One power sample [W] of `device_id` at `at` (aware); out-of-order ones are skipped."""
        if not math.isfinite(power_w):
            return  # never a value; the next good sample starts a new hold
        last = self._last.get(device_id)
        if last is not None:
            held_s = (at - last[0]).total_seconds()
            if held_s < 0:
                return
            energy_wh = last[1] * min(held_s, self.max_hold_s) / 3600.0
            if energy_wh > 0:
                self.positive_wh += energy_wh
            else:
                self.negative_wh -= energy_wh
        self._last[device_id] = (at, power_w)


__all__ = ["SplitEnergy"]
