"""SQLite storage: schema, migrations, time series, roll-ups, retention."""
