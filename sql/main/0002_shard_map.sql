-- The shard map: users (and phones) hash to a fixed number of logical
-- slots, chosen at the first migrate; each slot belongs to one coupon
-- table, and each table to one shard database. Growing moves whole slots.
CREATE TABLE IF NOT EXISTS shard_meta (
  name  VARCHAR(64) NOT NULL,
  value BIGINT      NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS shard_slot (
  slot     INT NOT NULL,
  table_no INT NOT NULL,
  PRIMARY KEY (slot)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS shard_table (
  table_no    INT NOT NULL,
  shard_index INT NOT NULL,
  PRIMARY KEY (table_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
