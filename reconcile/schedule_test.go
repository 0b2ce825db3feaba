package reconcile_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/reconcile"
)

func mustState(tb testing.TB) *sql.DB {
	tb.Helper()
	dsn := testenv.MustDatabase(tb, testenv.Unique(tb)+"_state")
	db, err := reconcile.OpenState(context.Background(), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	// A second migration changes nothing.
	if err := reconcile.Migrate(context.Background(), dsn); err != nil {
		tb.Fatalf("second migration: %v", err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// replicas returns n schedulers of the same books over db, counting runs.
func replicas(db *sql.DB, n int, runs *atomic.Int64, now time.Time) []*reconcile.Scheduler {
	var out []*reconcile.Scheduler
	for i := range n {
		out = append(out, &reconcile.Scheduler{
			DB: db, Cron: "* * * * * *", SourceKey: "mysql:test", Owner: string(rune('A' + i)), Lease: time.Minute,
			Now: func() time.Time { return now },
			Run: func(ctx context.Context, day time.Time) (int64, error) {
				if day.Format(time.DateOnly) != "2026-03-10" {
					return 0, errors.New("wrong day " + day.String())
				}
				runs.Add(1)
				return 7, nil
			},
		})
	}
	return out
}

var tick = time.Date(2026, 3, 11, 0, 30, 0, 0, time.UTC)

// TestSchedulerOneRunPerDay races replicas for the same day: it runs once.
func TestSchedulerOneRunPerDay(t *testing.T) {
	db := mustState(t)
	var runs atomic.Int64
	var wg sync.WaitGroup
	var ran atomic.Int64
	for _, s := range replicas(db, 3, &runs, tick) {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.RunDue(context.Background())
				if err != nil {
					t.Errorf("RunDue: %v", err)
				}
				if ok {
					ran.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if runs.Load() != 1 || ran.Load() != 1 {
		t.Fatalf("%d runs (%d reported); want exactly 1", runs.Load(), ran.Load())
	}
	var status string
	var runID int64
	if err := db.QueryRow(`SELECT status, run_id FROM reconcile_claim WHERE run_date = '2026-03-10'`).Scan(&status, &runID); err != nil {
		t.Fatal(err)
	}
	if status != reconcile.ClaimDone || runID != 7 {
		t.Errorf("claim = %s, run %d; want done, 7", status, runID)
	}
}

// TestSchedulerClaims: a live claim is respected, an expired or failed one
// is taken over.
func TestSchedulerClaims(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		lease   time.Time
		wantRun bool
	}{
		{"running, lease live", reconcile.ClaimRunning, tick.Add(time.Minute), false},
		{"running, lease expired", reconcile.ClaimRunning, tick.Add(-time.Second), true},
		{"failed", reconcile.ClaimFailed, tick.Add(time.Minute), true},
		{"done", reconcile.ClaimDone, tick.Add(-time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := mustState(t)
			if _, err := db.Exec(`INSERT INTO reconcile_claim (run_date, source_key, owner, status, lease_until, claimed_at) VALUES ('2026-03-10', 'mysql:test', 'dead', ?, ?, ?)`,
				tt.status, tt.lease, tick.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			var runs atomic.Int64
			ok, err := replicas(db, 1, &runs, tick)[0].RunDue(context.Background())
			if err != nil || ok != tt.wantRun || runs.Load() != map[bool]int64{true: 1}[tt.wantRun] {
				t.Errorf("RunDue = %v, %v (%d runs); want %v", ok, err, runs.Load(), tt.wantRun)
			}
		})
	}
}

// TestSchedulerCron runs two replicas on a cron of every second: the day is
// run by exactly one of them, and the other then sees it done.
func TestSchedulerCron(t *testing.T) {
	db := mustState(t)
	var runs atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range replicas(db, 2, &runs, tick) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Start(ctx); err != nil {
				t.Errorf("Start: %v", err)
			}
		}()
	}
	testenv.Eventually(t, 10*time.Second, "the scheduled day is done", func() bool {
		var status string
		err := db.QueryRow(`SELECT status FROM reconcile_claim WHERE run_date = '2026-03-10'`).Scan(&status)
		return err == nil && status == reconcile.ClaimDone
	})
	cancel()
	wg.Wait()
	if runs.Load() != 1 {
		t.Errorf("%d runs; want 1", runs.Load())
	}
	if ok, err := replicas(db, 1, &runs, tick)[0].RunDue(context.Background()); ok || err != nil {
		t.Errorf("a third replica ran the day again: %v, %v", ok, err)
	}
}
