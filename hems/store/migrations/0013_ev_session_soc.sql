-- An owner's EV target given as a state of charge (owned by hems.store.evsessions): the SoC
-- the owner read from the car and the SoC wanted; the energy is computed from them.
ALTER TABLE ev_sessions ADD COLUMN soc_pct REAL;
ALTER TABLE ev_sessions ADD COLUMN target_soc_pct REAL;
