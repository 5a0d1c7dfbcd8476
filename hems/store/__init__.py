"""SQLite storage: the connection, numbered migrations, time series, roll-ups, retention.

Every table has one owner module: readings and roll-ups here (`timeseries`, `rollup`), EV
sessions here (`evsessions`), and each stage's own tables in that stage (named in each
migration's header).
"""

from hems.store.db import Database
from hems.store.evsessions import EvSessionTable
from hems.store.timeseries import ReadingStore

__all__ = ["Database", "EvSessionTable", "ReadingStore"]
