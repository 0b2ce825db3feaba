-- A coupon lock belongs to its DTM global transaction: the gid and branch
-- that locked the coupon are written with the barrier, kept while it is
-- USED, and checked by Confirm and Cancel. Locks taken before this column
-- existed have an empty gid and are matched by order number.
{{range .Tables}}
ALTER TABLE coupon_{{.}}
  ADD COLUMN IF NOT EXISTS lock_gid    VARCHAR(128) NOT NULL DEFAULT '' AFTER discount_amount,
  ADD COLUMN IF NOT EXISTS lock_branch VARCHAR(128) NOT NULL DEFAULT '' AFTER lock_gid;
{{end}}
