"""The real-time control loop and the safety guard.

Entry class: `ControlLoop`; devices are handed in through `ControlledDevices`. The names in
`__all__` are imported lazily, on first use, so that `hems.config` can import
`hems.control.config` without pulling in the loop. One job per module:

  loop        `ControlLoop`: the cadence, the compute stage (plan slot, EV sessions, the
              flexibility event) and the public surface; wires the parts below together.
  config      `ControlConfig` (the `control:` section) and `DeviceControlConfig`; per-device
              tuning is read with `cfg.setting(device_id, name)` / `cfg.device(device_id)`.
  devices     `ControlledDevices`: the capability objects the loop may command.
  model       the process image, device specs, commands and `Intervention`.
  snapshot    `Snapshot`: reads the process image (and charger / load reports, under the
              snapshot budget); drops implausible readings.
  strategies  pure: what each device should do (`propose`, `ramp`, ...); a live
              flexibility target is a `hems.core.flex.FlexInstruction`.
  guard       pure: what it may do (`apply_guard`), and `ExcursionTracker`.
  excursions  `Excursions`: times measured fuse and export excursions; escalates the guard.
  overrides   `Overrides`: manual targets, checked against each device's range, expired.
  writer      `Writer`: rate limits, then writes beyond the deadband, refreshes, timeouts.
  verify      `Verifier`: did each device follow; flags those that ignore commands.
  journal     `Journal`: interventions logged, kept for `recent_interventions()` and
              stored in `control_interventions`.
  problems    `Problems`: log-once keys for conditions that persist over cycles.

One cycle (every `control.cycle_s`, default 1 s; earlier when a grid reading breaks the fuse
or the export limit):

1. snapshot  a process image from SiteState: grid power and phase currents, each battery,
             PV inverter, charger and switchable load; plus what chargers (`state()`) and
             loads (`is_on()`) report, asked concurrently under a time budget. Implausible
             readings are dropped for the cycle; a second meter of the grid flow is ignored.
2. strategies  per device, from the plan slot, the live image, overrides, EV sessions and
             an active flexibility event: EVs first (plan, min+PV, PV-only with hysteresis
             timers and 1p/3p switching, fast, off; a departure forces fast charging), then
             batteries (plan-following corrected by the meter, or self-consumption), then
             deferrable loads (plan switches) and PV (curtailed towards zero export when
             the plan asks or export is paid negatively). With `ev_from_battery: false`
             (the default) the battery discharges at most what the house without the EVs
             takes. Then rate limits (`ramp_w_per_s`).
3. guard     `apply_guard`, ordered and final; nothing else can build a command the writer
             accepts:
               stale    a device without fresh readings gets its safe state (battery idle
                        or self-consumption, charger paused or at minimum, curtailment
                        kept, deferrable load off); a stale grid meter makes every device
                        safe;
               range    clamp to the device's range, map unsupported battery modes;
               reserve  no discharge at or below the reserve SoC (unless `outage`);
               fuse     predicted import per phase and in total <= fuse - margin, shed in
                        `shed_order` (EV current, battery charging, deferrable loads,
                        battery discharge); a flexibility import cap acts as a lower fuse;
               export   predicted export <= the agreed limit - margin: the battery
                        absorbs, then PV is curtailed;
               ev-min   an EV is never offered less than its minimum current: pause.
             No credit is taken for a device that ignores commands, for a charger that may
             delay a change longer than the deadline (GB randomised delay, 600 s, outside
             demand-side response), or for anything while a measured overload persists.
4. write     only what changed beyond a deadband, what the guard changed, or what is due for
             a refresh inside the device-side revert timeout; each write under its own
             timeout, the cycle waits no longer than its write budget.
5. verify    once a command has had `verify_after_s` (plus a charger's delay) to act, the
             readings (and the load's own on/off report) are checked; `verify_failures`
             misses in a row flag the device as ignoring commands (logged, shown in
             `status()`, distrusted by the guard) until it follows again.

Every intervention is logged on start and end with its rule, device and reason, kept for the
web page and stored in `control_interventions`. Fuse overloads (2 s) and export excursions
(G100: corrected within 15 s, never over 60 s) are timed and counted. The systemd watchdog is
fed only after a healthy cycle.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hems.control.config import ControlConfig, DeviceControlConfig, StageBudgets
    from hems.control.devices import ControlledDevices
    from hems.control.journal import InterventionRecord
    from hems.control.loop import ControlLoop
    from hems.control.model import Intervention

__all__ = [
    "ControlConfig",
    "ControlLoop",
    "ControlledDevices",
    "DeviceControlConfig",
    "Intervention",
    "InterventionRecord",
    "StageBudgets",
]

_WHERE = {
    "ControlConfig": "hems.control.config",
    "ControlLoop": "hems.control.loop",
    "ControlledDevices": "hems.control.devices",
    "DeviceControlConfig": "hems.control.config",
    "Intervention": "hems.control.model",
    "InterventionRecord": "hems.control.journal",
    "StageBudgets": "hems.control.config",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
