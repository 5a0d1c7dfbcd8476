-- Control loop: every safety intervention, so the user sees each one and why.
-- One row per transition (an intervention starting, changing or ending), not per cycle.
-- Timestamps are integer milliseconds since the Unix epoch, UTC.
CREATE TABLE control_interventions (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    rule TEXT NOT NULL,                  -- fuse, export, reserve, ev-min, stale, range, g100, flex, bad-input, device
    device_id TEXT NOT NULL DEFAULT '',  -- '' for site-wide
    event TEXT NOT NULL,                 -- start, end, late, breach, rejected, flagged, ...
    reason TEXT NOT NULL,
    before_json TEXT NOT NULL DEFAULT '{}',   -- command before the rule
    after_json TEXT NOT NULL DEFAULT '{}'     -- command after the rule
);

CREATE INDEX control_interventions_at ON control_interventions(at_ms);
CREATE INDEX control_interventions_rule ON control_interventions(rule, at_ms);
