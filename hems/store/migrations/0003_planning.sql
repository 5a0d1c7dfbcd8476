-- Planning: tariff price cache, forecasts, and every plan with the inputs that made it.
-- Timestamps are integer milliseconds since the Unix epoch, UTC.

-- Unit prices per validity interval, as fetched (Octopus Agile: half-hourly), or injected by
-- an aggregator (source = 'signal'). Kept so the planner works offline on last known prices.
CREATE TABLE tariff_prices (
    tariff_code TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('import', 'export')),
    valid_from_ms INTEGER NOT NULL,
    valid_to_ms INTEGER NOT NULL,
    price_per_kwh REAL NOT NULL,              -- currency/kWh incl. VAT, may be negative
    fetched_at_ms INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT 'api',
    PRIMARY KEY (tariff_code, direction, valid_from_ms)
) WITHOUT ROWID;

-- Each forecast as made: kind pv|load, a regular series from start_ms every step_s.
CREATE TABLE forecasts (
    forecast_pk INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('pv', 'load')),
    made_at_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    step_s INTEGER NOT NULL,
    values_json TEXT NOT NULL,                -- [W] per step; null where unknown
    source TEXT NOT NULL,                     -- open-meteo | history | default
    flags_json TEXT NOT NULL DEFAULT '[]'     -- what was cleaned or substituted
);
CREATE INDEX forecasts_kind_made ON forecasts(kind, made_at_ms);

-- Every plan with its full Problem (versioned JSON), so `hems optimise` reproduces it.
CREATE TABLE plans (
    plan_pk INTEGER PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,                     -- optimal | feasible | relaxed | infeasible | error
    cost REAL,
    solve_time_ms REAL,
    problem_json TEXT NOT NULL,
    plan_json TEXT,                           -- null when no plan came out
    notes_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX plans_created ON plans(created_at_ms);
