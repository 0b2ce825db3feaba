-- A claim batch counts and limits each (user, template) in one upsert that
-- returns how many of its claims it accepted: the request (req), the limit
-- (lim) and the accepted count (delta) of the last batch ride on the row,
-- so no separate lock and read is needed.
{{range .Tables}}
ALTER TABLE claim_count_{{.}}
  ADD COLUMN IF NOT EXISTS delta INT NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS req   INT NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS lim   INT NOT NULL DEFAULT 0;
{{end}}
