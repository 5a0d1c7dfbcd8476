"""Numbered SQL migrations, applied in order by hems.store.db.migrate.

Numbers are reserved per area so work can proceed in parallel:
0001 readings and roll-ups · 0002 meter half-hour intervals · 0003 planning (tariffs,
forecasts, plans) · 0004 uplink (outbox, message ids, sequence) · 0005 flex (events,
reports) · 0006 ocpp (chargers, transactions) · 0007 control (interventions).
Later changes take the next free number.
"""
