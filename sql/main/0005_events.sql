-- The catalog's outbox (template.changed, stock.added): the same shape as
-- the shards' coupon_event (sql/shard/0010_events.sql), written in the
-- catalog change's transaction and drained by the same relay.
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
