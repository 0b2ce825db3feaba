package app

import (
	"context"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/reconcile"
)

// TestReconcileRunsOpensItsOwnPool: the console's view of reconcile's runs
// reads the main database through a pool it opens on the first look, shows
// none before reconcile ever ran there, and closes the pool with the App.
func TestReconcileRunsOpensItsOwnPool(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := testenv.MustDatabase(t, testenv.Unique(t)+"_main")
	r := &reconcileRuns{dsn: dsn}
	t.Cleanup(func() { _ = r.Close() })

	runs, err := r.Runs(ctx, 10)
	if err != nil || len(runs) != 0 {
		t.Fatalf("Runs before reconcile ran = %v, %v; want none", runs, err)
	}
	if err := reconcile.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	if runs, err = r.Runs(ctx, 10); err != nil || len(runs) != 0 {
		t.Fatalf("Runs with no run recorded = %v, %v; want none", runs, err)
	}
	if r.db == nil {
		t.Fatal("Runs did not keep its pool")
	}
	if err := r.Close(); err != nil || r.db != nil {
		t.Fatalf("Close = %v (pool %v), want the pool closed and dropped", err, r.db)
	}
	if err := (*reconcileRuns)(nil).Close(); err != nil {
		t.Fatalf("Close of no runs view = %v", err)
	}
}
