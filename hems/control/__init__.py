"""The real-time control loop and the safety guard.

Entry class: `hems.control.loop.ControlLoop`; devices are handed in through
`hems.control.devices.ControlledDevices`. Pure logic lives in `strategies` (what each device
should do) and `guard` (what it may do). Nothing is re-exported here so that `hems.config`
can import `hems.control.config` without pulling in the loop.
"""
