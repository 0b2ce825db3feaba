-- Outbox rows the relay cannot read as events (written corrupted, or by
-- hand) are moved here, whole, in one transaction with their delete from
-- coupon_outbox, so that one such row does not hold back every event after
-- it. Nothing reads this table but an operator: the relay logs each row it
-- sets aside and counts it (coupon_events_set_aside_total, alert
-- CouponEventRowSetAside).
CREATE TABLE IF NOT EXISTS coupon_outbox_set_aside (
  id          BIGINT       NOT NULL,
  events      MEDIUMBLOB   NOT NULL,
  n           INT          NOT NULL,
  occurred_at DATETIME(6)  NOT NULL,
  reason      VARCHAR(255) NOT NULL,
  set_aside_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB;
