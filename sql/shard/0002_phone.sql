-- Claims by phone numbers not yet bound to a user. A phone's rows live in
-- the tables numbered by the phone (as a user's coupon_NNNN by the user ID);
-- bind_intent_NNNN is numbered by the user, like coupon_NNNN.
{{range .Tables}}
-- One row per phone that ever claimed or was bound. Its row lock makes
-- claims and binds of one phone take turns; user_id 0 means not bound.
CREATE TABLE IF NOT EXISTS phone_{{.}} (
  phone      VARCHAR(16) NOT NULL,
  user_id    BIGINT      NOT NULL DEFAULT 0,
  bound_at   DATETIME(6) NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (phone)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Coupons waiting for their phone to be bound. bind_user_id is the bind
-- intent: set when the phone is bound, the row is being moved to that
-- user's coupon table and is deleted once it is there.
CREATE TABLE IF NOT EXISTS pending_coupon_{{.}} (
  id           BIGINT      NOT NULL,
  code         VARCHAR(32) NOT NULL,
  template_id  BIGINT      NOT NULL,
  campaign_id  BIGINT      NOT NULL,
  phone        VARCHAR(16) NOT NULL,
  request_id   VARCHAR(64) NOT NULL,
  status       TINYINT     NOT NULL,
  claimed_at   DATETIME(6) NOT NULL,
  expire_at    DATETIME(6) NOT NULL,
  bind_user_id BIGINT      NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  UNIQUE KEY uk_code (code),
  UNIQUE KEY uk_request (request_id),
  KEY idx_phone (phone, template_id),
  KEY idx_template (template_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Binds of the user's that may be unfinished: written before any coupon
-- moves and deleted after the last has, so that reading a user's coupons
-- finds half-done moves with one primary-key lookup.
CREATE TABLE IF NOT EXISTS bind_intent_{{.}} (
  user_id    BIGINT      NOT NULL,
  phone      VARCHAR(16) NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (user_id, phone)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
{{end}}
