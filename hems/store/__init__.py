"""SQLite storage: schema, migrations, time series, roll-ups, retention."""

from hems.store.db import Database
from hems.store.timeseries import ReadingStore

__all__ = ["Database", "ReadingStore"]
