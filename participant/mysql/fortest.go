package mysql

import "database/sql"

// The pools stay inside the package: production code reads and writes
// rows through the stores. Tests elsewhere (the gRPC adapter's, the app's,
// the benchmarks' own tests) check rows the stores do not show, such as
// barrier rows and claim counts; these two accessors are for them alone.

// DBsForTest is the main database and the shard databases in order. For
// tests only.
func (s *Stores) DBsForTest() (main *sql.DB, shards []*sql.DB) {
	return s.shards.main, s.shards.dbs
}

// UserShardForTest is the database holding the user's rows and the number
// of the user's coupon table (its suffix, e.g. coupon_0003). For tests only.
func (s *Stores) UserShardForTest(userID int64) (db *sql.DB, table int) {
	sh := s.shards.ofUser(userID)
	return sh.db, sh.table
}
