-- Issue 11: orders placed as a Saga as well as TCC, and refunds through a
-- DTM 2-phase message. Every statement is idempotent, since migrate applies
-- every file each time.
ALTER TABLE orders
  ADD COLUMN IF NOT EXISTS mode VARCHAR(8) NOT NULL DEFAULT 'tcc' AFTER coupon_code,
  ADD COLUMN IF NOT EXISTS refund_gid VARCHAR(128) NOT NULL DEFAULT '',
  ADD COLUMN IF NOT EXISTS refunded_at DATETIME(6) NULL,
  ADD COLUMN IF NOT EXISTS refund_reason VARCHAR(255) NOT NULL DEFAULT '',
  MODIFY status ENUM('PENDING', 'PAID', 'CANCELLED', 'REFUNDED') NOT NULL DEFAULT 'PENDING';

-- The barrier janitor (internal/janitor) walks the table in create_time
-- order; give the index the name the coupon shards use.
ALTER TABLE barrier
  DROP INDEX IF EXISTS create_time,
  ADD INDEX IF NOT EXISTS idx_create_time (create_time);
