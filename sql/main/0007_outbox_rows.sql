-- The catalog's outbox, in the shards' shape (sql/shard/0011_outbox_rows.sql):
-- one row per transaction, its events as published.
DROP TABLE IF EXISTS coupon_event;
CREATE TABLE IF NOT EXISTS coupon_outbox (
  id          BIGINT      NOT NULL AUTO_INCREMENT,
  events      MEDIUMBLOB  NOT NULL,
  n           INT         NOT NULL,
  occurred_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB;
