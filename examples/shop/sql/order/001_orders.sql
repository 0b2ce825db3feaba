CREATE TABLE IF NOT EXISTS orders (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  order_no VARCHAR(64) NOT NULL,
  user_id BIGINT NOT NULL,
  amount BIGINT NOT NULL,
  currency CHAR(3) NOT NULL,
  product_line VARCHAR(64) NOT NULL DEFAULT '',
  items JSON NOT NULL,
  coupon_code VARCHAR(64) NOT NULL DEFAULT '',
  discount BIGINT NOT NULL DEFAULT 0,
  payable BIGINT NOT NULL,
  gid VARCHAR(128) NOT NULL,
  status ENUM('PENDING', 'PAID', 'CANCELLED') NOT NULL DEFAULT 'PENDING',
  -- Set by the order branch's Try; an order without it was never part of a
  -- transaction that could commit, so the sweeper may cancel it.
  tried_at DATETIME(6) NULL,
  failure_reason VARCHAR(64) NOT NULL DEFAULT '',
  failure_message VARCHAR(512) NOT NULL DEFAULT '',
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  UNIQUE KEY uk_order_no (order_no),
  KEY idx_user (user_id, created_at),
  KEY idx_status (status, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
