-- Every admin change, written in the same transaction as the change: who
-- (the authenticated identity), through which method, to which entity,
-- and the entity as JSON before and after.
CREATE TABLE IF NOT EXISTS audit_log (
  id          BIGINT       NOT NULL AUTO_INCREMENT,
  identity    VARCHAR(128) NOT NULL,
  method      VARCHAR(255) NOT NULL,
  entity_type VARCHAR(32)  NOT NULL,
  entity_id   BIGINT       NOT NULL,
  before_json MEDIUMTEXT   NOT NULL,
  after_json  MEDIUMTEXT   NOT NULL,
  created_at  DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  KEY idx_entity (entity_type, entity_id, id),
  KEY idx_identity (identity, id),
  KEY idx_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Whether a coupon used by a refunded order comes back (ReturnCoupon).
ALTER TABLE coupon_template ADD COLUMN IF NOT EXISTS returnable TINYINT(1) NOT NULL DEFAULT 1 AFTER usage_rule;
