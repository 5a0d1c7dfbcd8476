-- Issue 16, the SD-card budget: the control journal's indexes cost a page each per batch that
-- carries an intervention (and again at the checkpoint), and no hot query reads them. The only
-- reader is `hems interventions` (hems.control.journal.read_interventions: newest first,
-- optionally one rule, a LIMIT), an occasional command that scans the table instead.
DROP INDEX control_interventions_at;

DROP INDEX control_interventions_rule;
