-- A coupon code carries its coupon ID (participant.CodeID), so codes are
-- looked up by primary key and need no index of their own: one index
-- entry and one uniqueness check less per claim. Codes stay unique because
-- IDs are.
{{range .Tables}}
ALTER TABLE coupon_{{.}} DROP INDEX IF EXISTS uk_code;
{{end}}
