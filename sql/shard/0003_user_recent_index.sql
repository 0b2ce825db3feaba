-- A user's coupons are listed newest first: (user_id) ordered by the
-- primary key serves ORDER BY id DESC without a filesort. It replaces
-- idx_user (user_id, template_id, status), whose filters a user's few
-- rows do not need an index for.
{{range .Tables}}
ALTER TABLE coupon_{{.}} DROP INDEX IF EXISTS idx_user, ADD INDEX IF NOT EXISTS idx_user_recent (user_id, id);
{{end}}
