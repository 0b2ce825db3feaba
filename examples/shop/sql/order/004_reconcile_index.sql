-- The nightly reconcile reads the rows updated since the day began
-- (reconcile.MySQLOrders): a range over this index instead of a scan of
-- every order ever placed.
ALTER TABLE orders ADD INDEX IF NOT EXISTS idx_updated (updated_at);
