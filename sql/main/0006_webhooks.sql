-- Webhook endpoints: where lifecycle events are POSTed (internal/webhook).
-- event_types is a comma-separated list of event types, '' for all. The
-- secret signs every delivery, so it is kept as issued (it is shown to the
-- admin only once, when the endpoint is created). consecutive_failures and
-- failing_since describe the current run of failed attempts; too long a run
-- disables the endpoint with disabled_reason.
CREATE TABLE IF NOT EXISTS webhook_endpoint (
  id                   BIGINT        NOT NULL AUTO_INCREMENT,
  url                  VARCHAR(2048) NOT NULL,
  event_types          VARCHAR(1024) NOT NULL DEFAULT '',
  secret               VARCHAR(128)  NOT NULL,
  status               VARCHAR(16)   NOT NULL,
  consecutive_failures INT           NOT NULL DEFAULT 0,
  failing_since        DATETIME(6)   NULL,
  disabled_reason      VARCHAR(255)  NOT NULL DEFAULT '',
  created_by           VARCHAR(128)  NOT NULL,
  created_at           DATETIME(6)   NOT NULL,
  updated_at           DATETIME(6)   NOT NULL,
  PRIMARY KEY (id),
  KEY idx_status (status, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per delivery attempt. stream_seq is the event's sequence in the
-- COUPON_EVENTS stream, from which a redelivery reads it again. manual marks
-- an attempt an admin asked for (Redeliver); gave_up marks the last attempt
-- of an event whose retry horizon had passed.
CREATE TABLE IF NOT EXISTS webhook_delivery (
  id          BIGINT          NOT NULL AUTO_INCREMENT,
  endpoint_id BIGINT          NOT NULL,
  event_id    VARCHAR(255)    NOT NULL,
  event_type  VARCHAR(64)     NOT NULL,
  stream_seq  BIGINT UNSIGNED NOT NULL,
  attempt     INT             NOT NULL,
  manual      TINYINT(1)      NOT NULL DEFAULT 0,
  status_code INT             NOT NULL DEFAULT 0,
  latency_ms  INT             NOT NULL DEFAULT 0,
  error       VARCHAR(1024)   NOT NULL DEFAULT '',
  delivered   TINYINT(1)      NOT NULL,
  gave_up     TINYINT(1)      NOT NULL DEFAULT 0,
  created_at  DATETIME(6)     NOT NULL,
  PRIMARY KEY (id),
  KEY idx_endpoint (endpoint_id, id),
  KEY idx_event (event_id, endpoint_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
