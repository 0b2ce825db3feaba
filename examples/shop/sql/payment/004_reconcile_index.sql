-- The nightly reconcile reads the rows updated since the day began
-- (reconcile.MySQLPayments): a range over this index instead of a scan of
-- every payment ever made.
ALTER TABLE payments ADD INDEX IF NOT EXISTS idx_updated (updated_at);
