package janitor_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/client/dtmgrpc/dtmgimp"
	"github.com/dtm-labs/logger"

	"github.com/opencoupon/coupon/examples/shop"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/janitor"
	"github.com/opencoupon/coupon/internal/testenv"
)

func TestMain(m *testing.M) {
	logger.InitLog("fatal")
	os.Exit(m.Run())
}

func TestNew(t *testing.T) {
	db := &sql.DB{}
	never := func(context.Context, string) (string, error) { return "", nil }
	tests := []struct {
		name    string
		cfg     janitor.Config
		dbs     []*sql.DB
		wantErr string
	}{
		{"defaults with a lookup", janitor.Config{Status: never}, []*sql.DB{db}, ""},
		{"defaults with a coordinator", janitor.Config{Coordinator: "127.0.0.1:36789"}, []*sql.DB{db, db}, ""},
		{"no lookup", janitor.Config{}, []*sql.DB{db}, "neither a status lookup nor a coordinator"},
		{"no database", janitor.Config{Status: never}, nil, "no databases"},
		{"nil database", janitor.Config{Status: never}, []*sql.DB{nil}, "database 0 is nil"},
		{"max age below retention", janitor.Config{Status: never, Retention: 48 * time.Hour, MaxAge: 24 * time.Hour}, []*sql.DB{db}, "below retention"},
		{"negative retention", janitor.Config{Status: never, Retention: -time.Hour}, []*sql.DB{db}, "negative"},
		{"batch too large", janitor.Config{Status: never, Batch: 100000}, []*sql.DB{db}, "batch"},
		{"odd table name", janitor.Config{Status: never, Table: "barrier; DROP TABLE x"}, []*sql.DB{db}, "table"},
		{"qualified table name", janitor.Config{Status: never, Table: "dtm_barrier.barrier"}, []*sql.DB{db}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := janitor.New(tt.cfg, tt.dbs...)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("New = %v; want error containing %q", err, tt.wantErr)
			}
		})
	}
}

// mustBarrier returns a fresh database with a DTM barrier table (the
// shop's order schema) opened with dsnParams added to its DSN.
func mustBarrier(tb testing.TB, dsnParams string) *sql.DB {
	tb.Helper()
	ctx := context.Background()
	dsn := testenv.MustDatabase(tb, testenv.Unique(tb))
	if err := shop.Migrate(ctx, dsn, shop.OrderDB); err != nil {
		tb.Fatal(err)
	}
	db, err := shop.Open(ctx, dsn+dsnParams, 2)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// insertRow writes a barrier row for gid, created age ago by the
// database's clock (in its session time zone, as DEFAULT NOW() does).
func insertRow(tb testing.TB, db *sql.DB, gid, branch string, age time.Duration) {
	tb.Helper()
	_, err := db.Exec(`INSERT INTO barrier (trans_type, gid, branch_id, op, barrier_id, reason, create_time, update_time)
		VALUES ('tcc', ?, ?, 'try', '01', 'try', NOW() - INTERVAL ? SECOND, NOW())`, gid, branch, int64(age/time.Second))
	if err != nil {
		tb.Fatal(err)
	}
}

func gids(tb testing.TB, db *sql.DB) map[string]int {
	tb.Helper()
	rows, err := db.Query(`SELECT gid, COUNT(*) FROM barrier GROUP BY gid`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var g string
		var n int
		if err := rows.Scan(&g, &n); err != nil {
			tb.Fatal(err)
		}
		out[g] = n
	}
	return out
}

// TestMaxAgeInSessionTimeZone: rows are aged by the database's clock in
// the connection's time zone, not by the driver's, so a session eight hours
// ahead of UTC neither deletes rows early nor keeps them late.
func TestMaxAgeInSessionTimeZone(t *testing.T) {
	db := mustBarrier(t, "&time_zone=%27%2B08%3A00%27")
	// Rows written by DEFAULT NOW() in that session.
	if _, err := db.Exec(`INSERT INTO barrier (trans_type, gid, branch_id, op, barrier_id, reason) VALUES ('tcc', 'g-now', '01', 'try', '01', 'try')`); err != nil {
		t.Fatal(err)
	}
	unknown := func(context.Context, string) (string, error) { return janitor.Unknown, nil }
	now := time.Now()
	for _, tt := range []struct {
		name       string
		at         time.Time
		wantLeft   int
		wantOldest time.Duration
	}{
		{"59 minutes later", now.Add(59 * time.Minute), 1, 59 * time.Minute},
		{"61 minutes later", now.Add(61 * time.Minute), 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j, err := janitor.New(janitor.Config{Retention: time.Hour, MaxAge: time.Hour, Status: unknown, Now: func() time.Time { return tt.at }}, db)
			if err != nil {
				t.Fatal(err)
			}
			st, err := j.RunOnce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := gids(t, db)["g-now"]; got != tt.wantLeft || st.DeletedExpired != int64(1-tt.wantLeft) {
				t.Errorf("rows left %d, stats %+v; want %d left", got, st, tt.wantLeft)
			}
			// Seconds of slack: the row was written a moment before now.
			if d := st.OldestAge - tt.wantOldest; d < -5*time.Second || d > 5*time.Second {
				t.Errorf("oldest age = %s; want about %s", st.OldestAge, tt.wantOldest)
			}
		})
	}
}

// TestRunOnce runs the janitor over two databases against a real
// coordinator holding transactions in each status that matters, with small
// batches so that kept rows must be paged over.
func TestRunOnce(t *testing.T) {
	dtm := dtmtest.Start(t)
	ctx := context.Background()
	run := testenv.Unique(t)
	// Real transactions: msgs are the cheapest to put in any status.
	succeed, failed, prepared := run+"-succeed", run+"-failed", run+"-prepared"
	for _, g := range []string{succeed, failed, prepared} {
		m := dtmgrpc.NewMsgGrpc(dtm.GRPCAddr, g)
		m.TimeoutToFail = 3600 // never back-checked while the test runs
		var err error
		switch g {
		case succeed:
			m.WaitResult = true
			err = m.Submit()
		case failed:
			if err = m.Prepare("127.0.0.1:1/none.V1/QueryPrepared"); err == nil {
				err = dtmgimp.DtmGrpcCall(&m.TransBase, "Abort")
			}
		case prepared:
			err = m.Prepare("127.0.0.1:1/none.V1/QueryPrepared")
		}
		if err != nil {
			t.Fatalf("transaction %s: %v", g, err)
		}
	}
	status := janitor.CoordinatorStatus(dtm.HTTPAddr, nil)
	for g, want := range map[string]string{succeed: janitor.StatusSucceed, failed: janitor.StatusFailed, prepared: "prepared", run + "-unknown": janitor.Unknown} {
		if got, err := status(ctx, g); err != nil || got != want {
			t.Fatalf("status of %s = %q, %v; want %q", g, got, err, want)
		}
	}

	day := 24 * time.Hour
	dbs := []*sql.DB{mustBarrier(t, ""), mustBarrier(t, "")}
	for _, db := range dbs {
		for b := range 5 {
			branch := fmt.Sprintf("%02d", b)
			insertRow(t, db, succeed, branch, 8*day)          // finished, past retention: goes
			insertRow(t, db, failed, branch, 8*day)           // finished, past retention: goes
			insertRow(t, db, prepared, branch, 8*day)         // unfinished: stays
			insertRow(t, db, run+"-unknown", branch, 8*day)   // unknown: stays (UnknownFinished off)
			insertRow(t, db, succeed+"-new", branch, 6*day)   // within retention: stays, not looked up
			insertRow(t, db, prepared+"-old", branch, 31*day) // past max age, unknown: goes
		}
	}
	j, err := janitor.New(janitor.Config{Status: status, Batch: 4}, dbs...)
	if err != nil {
		t.Fatal(err)
	}
	st, err := j.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := janitor.Stats{Deleted: 30, DeletedFinished: 20, DeletedExpired: 10, Kept: 20, KeptUnknown: 10, Lookups: 5}
	if st.Deleted != want.Deleted || st.DeletedFinished != want.DeletedFinished || st.DeletedExpired != want.DeletedExpired ||
		st.Kept != want.Kept || st.KeptUnknown != want.KeptUnknown || st.Lookups != want.Lookups {
		t.Errorf("stats = %+v; want %+v", st, want)
	}
	if d := st.OldestAge - 8*day; d < 0 || d > time.Minute {
		t.Errorf("oldest age = %s; want about 8 days", st.OldestAge)
	}
	for i, db := range dbs {
		got := gids(t, db)
		wantLeft := map[string]int{prepared: 5, run + "-unknown": 5, succeed + "-new": 5}
		if len(got) != len(wantLeft) {
			t.Errorf("database %d keeps %v; want %v", i, got, wantLeft)
		}
		for g, n := range wantLeft {
			if got[g] != n {
				t.Errorf("database %d keeps %d rows of %s; want %d", i, got[g], g, n)
			}
		}
	}

	t.Run("unknown as finished", func(t *testing.T) {
		j, err := janitor.New(janitor.Config{Status: status, UnknownFinished: true}, dbs...)
		if err != nil {
			t.Fatal(err)
		}
		st, err := j.RunOnce(ctx)
		if err != nil || st.DeletedFinished != 10 || st.Kept != 10 || st.KeptUnknown != 0 {
			t.Errorf("RunOnce = %+v, %v; want the unknown gid's 10 rows deleted, the prepared one's 10 kept", st, err)
		}
	})

	t.Run("coordinator unreachable", func(t *testing.T) {
		j, err := janitor.New(janitor.Config{Coordinator: "127.0.0.1:1", Retention: time.Hour}, dbs...)
		if err != nil {
			t.Fatal(err)
		}
		before := gids(t, dbs[0])
		if _, err := j.RunOnce(ctx); err == nil || !strings.Contains(err.Error(), "query dtm transaction") {
			t.Errorf("RunOnce = %v; want the lookup's error", err)
		}
		if after := gids(t, dbs[0]); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("rows %v became %v although no status was learnt", before, after)
		}
	})
}

// TestJanitorKeepsUnfinishedTransactions: past max age, rows of a
// transaction the coordinator reports unfinished stay (and are counted),
// while those of finished and unknown transactions go. A Cancel retried
// for longer than max age must still find its Try's row, or it would be
// taken for a null compensation and leave the coupon LOCKED.
func TestJanitorKeepsUnfinishedTransactions(t *testing.T) {
	dtm := dtmtest.Start(t)
	ctx := context.Background()
	run := testenv.Unique(t)
	succeed, prepared := run+"-succeed", run+"-prepared"
	done := dtmgrpc.NewMsgGrpc(dtm.GRPCAddr, succeed)
	done.WaitResult = true
	if err := done.Submit(); err != nil {
		t.Fatalf("transaction %s: %v", succeed, err)
	}
	open := dtmgrpc.NewMsgGrpc(dtm.GRPCAddr, prepared)
	open.TimeoutToFail = 3600 // never back-checked while the test runs
	if err := open.Prepare("127.0.0.1:1/none.V1/QueryPrepared"); err != nil {
		t.Fatalf("transaction %s: %v", prepared, err)
	}

	day := 24 * time.Hour
	db := mustBarrier(t, "")
	for b := range 3 {
		branch := fmt.Sprintf("%02d", b)
		insertRow(t, db, prepared, branch, 45*day)
		insertRow(t, db, succeed, branch, 45*day)
		insertRow(t, db, run+"-unknown", branch, 45*day)
	}
	j, err := janitor.New(janitor.Config{Status: janitor.CoordinatorStatus(dtm.HTTPAddr, nil), Batch: 2}, db)
	if err != nil {
		t.Fatal(err)
	}
	st, err := j.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeletedExpired != 6 || st.Kept != 3 || st.KeptPastMaxAge != 3 || st.KeptUnknown != 0 {
		t.Errorf("stats = %+v; want 6 deleted as expired, the unfinished transaction's 3 kept past max age", st)
	}
	if got := gids(t, db); len(got) != 1 || got[prepared] != 3 {
		t.Errorf("rows left %v; want only the 3 of the unfinished %s", got, prepared)
	}
}

// TestWalkUsesCreateTimeIndex: the janitor's reads go through
// idx_create_time (here on the shop's barrier table; the coupon shards'
// has the same index).
func TestWalkUsesCreateTimeIndex(t *testing.T) {
	db := mustBarrier(t, "")
	for i := range 200 {
		insertRow(t, db, fmt.Sprintf("g%d", i), "01", time.Duration(i)*time.Hour)
	}
	if _, err := db.Exec(`ANALYZE TABLE barrier`); err != nil {
		t.Fatal(err)
	}
	var (
		id                                int
		selectType, table, typ, keys, key sql.NullString
		keyLen, ref, rows, extra          sql.NullString
	)
	err := db.QueryRow("EXPLAIN "+janitor.PageQuery("barrier"), "2020-01-01", "2030-01-01", "1000-01-01", "1000-01-01", 0, 500).
		Scan(&id, &selectType, &table, &typ, &keys, &key, &keyLen, &ref, &rows, &extra)
	if err != nil {
		t.Fatal(err)
	}
	if key.String != "idx_create_time" || strings.Contains(extra.String, "filesort") {
		t.Errorf("EXPLAIN: key %q (type %s, extra %s); want idx_create_time", key.String, typ.String, extra.String)
	}
}
