-- Issue 11: payments taken by a Saga's debit and given back by a refund.
-- Every statement is idempotent, since migrate applies every file each time.
ALTER TABLE payments
  MODIFY status ENUM('FROZEN', 'CAPTURED', 'RELEASED', 'REFUNDED') NOT NULL;

-- The barrier janitor (internal/janitor) walks the table in create_time
-- order; give the index the name the coupon shards use.
ALTER TABLE barrier
  DROP INDEX IF EXISTS create_time,
  ADD INDEX IF NOT EXISTS idx_create_time (create_time);
