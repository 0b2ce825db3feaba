{{range .Tables}}
CREATE TABLE IF NOT EXISTS coupon_{{.}} (
  id              BIGINT      NOT NULL,
  code            VARCHAR(32) NOT NULL,
  template_id     BIGINT      NOT NULL,
  campaign_id     BIGINT      NOT NULL,
  user_id         BIGINT      NOT NULL,
  request_id      VARCHAR(64) NOT NULL,
  status          TINYINT     NOT NULL,
  claimed_at      DATETIME(6) NOT NULL,
  expire_at       DATETIME(6) NOT NULL,
  order_no        VARCHAR(64) NOT NULL DEFAULT '',
  discount_amount BIGINT      NOT NULL DEFAULT 0,
  locked_at       DATETIME(6) NULL,
  used_at         DATETIME(6) NULL,
  updated_at      DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_code (code),
  UNIQUE KEY uk_request (request_id),
  KEY idx_user (user_id, template_id, status),
  KEY idx_template (template_id, status),
  KEY idx_expire (status, expire_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- How many coupons of a template a user has claimed: the row lock on it
-- makes the per-user limit exact under concurrency.
CREATE TABLE IF NOT EXISTS claim_count_{{.}} (
  user_id     BIGINT NOT NULL,
  template_id BIGINT NOT NULL,
  claimed     INT    NOT NULL,
  PRIMARY KEY (user_id, template_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
{{end}}

-- Coupons used per user per UTC day, per template and (template_id 0) in all.
CREATE TABLE IF NOT EXISTS daily_use (
  user_id     BIGINT NOT NULL,
  day         DATE   NOT NULL,
  template_id BIGINT NOT NULL,
  used        INT    NOT NULL,
  PRIMARY KEY (user_id, day, template_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Append-only: one row per LOCK, CONSUME and RELEASE, written in the same
-- transaction as the coupon change. Reconciliation reads it.
CREATE TABLE IF NOT EXISTS coupon_ledger (
  id              BIGINT       NOT NULL AUTO_INCREMENT,
  op              VARCHAR(16)  NOT NULL,
  order_no        VARCHAR(64)  NOT NULL,
  gid             VARCHAR(128) NOT NULL DEFAULT '',
  branch_id       VARCHAR(128) NOT NULL DEFAULT '',
  coupon_id       BIGINT       NOT NULL,
  coupon_code     VARCHAR(32)  NOT NULL,
  user_id         BIGINT       NOT NULL,
  template_id     BIGINT       NOT NULL,
  discount_amount BIGINT       NOT NULL,
  created_at      DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  KEY idx_order (order_no),
  KEY idx_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- DTM's branch barrier, here so that a barrier row and a coupon change
-- share one local transaction.
CREATE TABLE IF NOT EXISTS barrier (
  id          BIGINT       NOT NULL AUTO_INCREMENT,
  trans_type  VARCHAR(45)  DEFAULT '',
  gid         VARCHAR(128) DEFAULT '',
  branch_id   VARCHAR(128) DEFAULT '',
  op          VARCHAR(45)  DEFAULT '',
  barrier_id  VARCHAR(45)  DEFAULT '',
  reason      VARCHAR(45)  DEFAULT '' COMMENT 'the branch type who inserted this record',
  create_time DATETIME     DEFAULT NOW(),
  update_time DATETIME     DEFAULT NOW(),
  PRIMARY KEY (id),
  UNIQUE KEY uk_barrier (gid, branch_id, op, barrier_id),
  KEY idx_create_time (create_time),
  KEY idx_update_time (update_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
