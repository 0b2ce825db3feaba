-- The outbox holds a transaction's events in one row: a claim batch of a
-- hundred coupons writes one row, not a hundred (most of what events cost
-- the database was inserting, reading and deleting a row per event).
-- events is the list of couponeventsv1.Event messages as they will be
-- published (the repeated field 1 of a protobuf message); n counts them;
-- occurred_at is the first one's time, for the relay's lag. Rows are read
-- in id order: a coupon's changes take its row lock before they insert
-- here, so its events are in id order too.
--
-- coupon_event (0010), one row per event, was never in a release; rows a
-- pre-release build left in it are not read.
DROP TABLE IF EXISTS coupon_event;
CREATE TABLE IF NOT EXISTS coupon_outbox (
  id          BIGINT      NOT NULL AUTO_INCREMENT,
  events      MEDIUMBLOB  NOT NULL,
  n           INT         NOT NULL,
  occurred_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB;
