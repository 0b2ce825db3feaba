-- Lifecycle events (the transactional outbox). Each coupon counts its
-- events in event_seq: a claim is event 1, and every later change adds its
-- events under the row lock the change already holds, so a coupon's events
-- are numbered in the order they happened. Coupons claimed before this
-- migration start from 1 too.
{{range .Tables}}
ALTER TABLE coupon_{{.}} ADD COLUMN IF NOT EXISTS event_seq BIGINT NOT NULL DEFAULT 1;
{{end}}

-- The outbox: one row per event, written in the same local transaction as
-- the change it reports (when events are on) and deleted by the relay once
-- NATS JetStream has stored it. Rows are read in id order; a coupon's
-- events are written under its row lock, so they are in id order too.
CREATE TABLE IF NOT EXISTS coupon_event (
  id              BIGINT       NOT NULL AUTO_INCREMENT,
  event_id        VARCHAR(160) NOT NULL,
  type            VARCHAR(32)  NOT NULL,
  coupon_id       BIGINT       NOT NULL DEFAULT 0,
  coupon_code     VARCHAR(32)  NOT NULL DEFAULT '',
  user_id         BIGINT       NOT NULL DEFAULT 0,
  template_id     BIGINT       NOT NULL DEFAULT 0,
  seq             BIGINT       NOT NULL DEFAULT 0,
  order_no        VARCHAR(64)  NOT NULL DEFAULT '',
  gid             VARCHAR(128) NOT NULL DEFAULT '',
  branch_id       VARCHAR(128) NOT NULL DEFAULT '',
  discount_amount BIGINT       NOT NULL DEFAULT 0,
  request_id      VARCHAR(64)  NOT NULL DEFAULT '',
  template_version BIGINT      NOT NULL DEFAULT 0,
  stock_added     BIGINT       NOT NULL DEFAULT 0,
  occurred_at     DATETIME(6)  NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
