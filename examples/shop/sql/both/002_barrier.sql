-- The DTM branch barrier, written in the same local transaction as the
-- branch's own rows. Same shape as DTM's dtmcli.barrier.mysql.sql.
CREATE TABLE IF NOT EXISTS barrier (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  trans_type VARCHAR(45) DEFAULT '',
  gid VARCHAR(128) DEFAULT '',
  branch_id VARCHAR(128) DEFAULT '',
  op VARCHAR(45) DEFAULT '',
  barrier_id VARCHAR(45) DEFAULT '',
  reason VARCHAR(45) DEFAULT '' COMMENT 'the branch op that inserted the row',
  create_time DATETIME DEFAULT CURRENT_TIMESTAMP,
  update_time DATETIME DEFAULT CURRENT_TIMESTAMP,
  KEY (create_time),
  KEY (update_time),
  UNIQUE KEY uniq_barrier (gid, branch_id, op, barrier_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
