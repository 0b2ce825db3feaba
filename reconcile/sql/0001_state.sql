-- State of the nightly reconciliation, in its own tables of the state
-- database (reconcile.state_dsn, by default the coupon main database).
-- Every statement is idempotent: the migration runs at every start.

-- One row per run: what it judged, what it found, where the report is.
CREATE TABLE IF NOT EXISTS reconcile_run (
  id            BIGINT        NOT NULL AUTO_INCREMENT,
  run_date      DATE          NOT NULL,
  as_of         DATETIME(6)   NOT NULL,
  -- Which books: "mysql:<hash of the DSNs>" or "csv:<directory of the files>".
  source_key    VARCHAR(255)  NOT NULL,
  -- running, done or failed.
  status        VARCHAR(16)   NOT NULL,
  findings      BIGINT        NOT NULL DEFAULT 0,
  open_findings BIGINT        NOT NULL DEFAULT 0,
  resolved      BIGINT        NOT NULL DEFAULT 0,
  money_at_risk BIGINT        NOT NULL DEFAULT 0,
  pending       BIGINT        NOT NULL DEFAULT 0,
  -- {"CLASS": {"count":…, "open":…, "resolved":…, "amount_at_risk":…}, …}
  totals        TEXT          NOT NULL,
  rows_read     BIGINT        NOT NULL DEFAULT 0,
  report_path   VARCHAR(1024) NOT NULL DEFAULT '',
  error         VARCHAR(1024) NOT NULL DEFAULT '',
  host          VARCHAR(255)  NOT NULL DEFAULT '',
  started_at    DATETIME(6)   NOT NULL,
  finished_at   DATETIME(6)   NULL,
  PRIMARY KEY (id),
  KEY idx_date (run_date, source_key, status, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The orders a run left pending, with their records, for the next day's run.
CREATE TABLE IF NOT EXISTS reconcile_pending (
  run_id   BIGINT       NOT NULL,
  order_no VARCHAR(191) NOT NULL,
  since    DATE         NOT NULL,
  body     MEDIUMTEXT   NOT NULL,
  PRIMARY KEY (run_id, order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per finding a repair acted on: applied releases and items marked
-- for manual review. The key makes every repair happen at most once.
CREATE TABLE IF NOT EXISTS reconcile_repair (
  run_date    DATE          NOT NULL,
  class       VARCHAR(40)   NOT NULL,
  order_no    VARCHAR(191)  NOT NULL,
  coupon_code VARCHAR(64)   NOT NULL,
  -- RELEASE_COUPON or MANUAL_REVIEW.
  action      VARCHAR(32)   NOT NULL,
  -- started, applied, failed or manual.
  status      VARCHAR(16)   NOT NULL,
  gid         VARCHAR(128)  NOT NULL DEFAULT '',
  branch_id   VARCHAR(128)  NOT NULL DEFAULT '',
  dtm_status  VARCHAR(16)   NOT NULL DEFAULT '',
  detail      VARCHAR(1024) NOT NULL DEFAULT '',
  run_id      BIGINT        NOT NULL DEFAULT 0,
  created_at  DATETIME(6)   NOT NULL,
  updated_at  DATETIME(6)   NOT NULL,
  PRIMARY KEY (run_date, class, order_no, coupon_code)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The scheduler's durable claim of a day: one replica runs it, and a day
-- that is done is not run again.
CREATE TABLE IF NOT EXISTS reconcile_claim (
  run_date    DATE         NOT NULL,
  source_key  VARCHAR(191) NOT NULL,
  owner       VARCHAR(255) NOT NULL,
  -- running, done or failed.
  status      VARCHAR(16)  NOT NULL,
  lease_until DATETIME(6)  NOT NULL,
  run_id      BIGINT       NOT NULL DEFAULT 0,
  claimed_at  DATETIME(6)  NOT NULL,
  finished_at DATETIME(6)  NULL,
  PRIMARY KEY (run_date, source_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
