CREATE TABLE IF NOT EXISTS campaign (
  id            BIGINT       NOT NULL AUTO_INCREMENT,
  request_id    VARCHAR(64)  NULL,
  name          VARCHAR(255) NOT NULL,
  description   VARCHAR(1024) NOT NULL DEFAULT '',
  campaign_type VARCHAR(64)  NOT NULL DEFAULT '',
  status        TINYINT      NOT NULL,
  start_time    DATETIME(6)  NOT NULL,
  end_time      DATETIME(6)  NOT NULL,
  created_by    VARCHAR(128) NOT NULL,
  approved_by   VARCHAR(128) NOT NULL DEFAULT '',
  created_at    DATETIME(6)  NOT NULL,
  updated_at    DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_request (request_id),
  KEY idx_status (status, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS coupon_template (
  id                     BIGINT        NOT NULL AUTO_INCREMENT,
  request_id             VARCHAR(64)   NULL,
  campaign_id            BIGINT        NOT NULL,
  name                   VARCHAR(255)  NOT NULL,
  description            VARCHAR(1024) NOT NULL DEFAULT '',
  logo                   VARCHAR(1024) NOT NULL DEFAULT '',
  coupon_type            TINYINT       NOT NULL,
  discount_amount        BIGINT        NOT NULL DEFAULT 0,
  percent_off            INT           NOT NULL DEFAULT 0,
  max_discount           BIGINT        NOT NULL DEFAULT 0,
  min_order_amount       BIGINT        NOT NULL DEFAULT 0,
  product_lines          TEXT          NOT NULL,
  usage_rule             TEXT          NOT NULL,
  total_stock            BIGINT        NOT NULL,
  per_user_limit         INT           NOT NULL DEFAULT 0,
  daily_use_limit        INT           NOT NULL DEFAULT 0,
  valid_from             DATETIME(6)   NOT NULL,
  valid_until            DATETIME(6)   NOT NULL,
  valid_days_after_claim INT           NOT NULL DEFAULT 0,
  status                 TINYINT       NOT NULL,
  created_by             VARCHAR(128)  NOT NULL,
  approved_by            VARCHAR(128)  NOT NULL DEFAULT '',
  sub_stock_count        INT           NOT NULL DEFAULT 1,
  version                BIGINT        NOT NULL DEFAULT 1,
  created_at             DATETIME(6)   NOT NULL,
  updated_at             DATETIME(6)   NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_request (request_id),
  KEY idx_campaign (campaign_id, id),
  KEY idx_status (status, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per AddStock request: the idempotency record of top-ups.
CREATE TABLE IF NOT EXISTS stock_op (
  request_id      VARCHAR(64)  NOT NULL,
  template_id     BIGINT       NOT NULL,
  amount          BIGINT       NOT NULL,
  sub_stock_count INT          NOT NULL DEFAULT 0,
  operator        VARCHAR(128) NOT NULL DEFAULT '',
  created_at      DATETIME(6)  NOT NULL,
  PRIMARY KEY (request_id),
  KEY idx_template (template_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
