"""The hardware-in-the-loop rig: a simulated home served over the protocols real devices use.

Not shipped in the wheel; the demo and the integration tests run on it. See hil/README.md.
"""
