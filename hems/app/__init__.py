"""The composition root: builds every stage from the config, typed, and runs them.

`Daemon` (daemon.py) owns the stages and their lifetimes; `links.py` holds the typed joints
between stages (charger events → EV sessions, flex instructions → planner and control,
envelope → planner, meter intervals → uplink). Nothing below this package imports it.
"""

from hems.app.daemon import Daemon

__all__ = ["Daemon"]
