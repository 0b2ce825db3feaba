-- One row per coupon returned after a refund (ReturnCoupon), written in the
-- same transaction as the return: the idempotency record of its request_id.
CREATE TABLE IF NOT EXISTS coupon_return (
  request_id VARCHAR(64)  NOT NULL,
  coupon_id  BIGINT       NOT NULL,
  user_id    BIGINT       NOT NULL,
  order_no   VARCHAR(64)  NOT NULL,
  reason     VARCHAR(255) NOT NULL DEFAULT '',
  created_at DATETIME(6)  NOT NULL,
  PRIMARY KEY (request_id),
  KEY idx_coupon (coupon_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
