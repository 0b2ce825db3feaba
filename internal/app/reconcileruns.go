package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/reconcile"
)

// reconcileRuns shows the console the runs `coupon reconcile` recorded in
// the main database (its default state database). The runs are
// reconcile's tables, not the coupon stores': they are read through a pool
// of reconcile's own, opened on the first look and closed with the App.
type reconcileRuns struct {
	dsn string
	mu  sync.Mutex
	db  *sql.DB
}

var _ console.ReconcileRuns = (*reconcileRuns)(nil)

func (r *reconcileRuns) open(ctx context.Context) (*sql.DB, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.db == nil {
		db, err := reconcile.OpenDB(ctx, r.dsn, 2)
		if err != nil {
			return nil, fmt.Errorf("open reconcile state: %w", err)
		}
		r.db = db
	}
	return r.db, nil
}

// Close closes the pool if it was opened.
func (r *reconcileRuns) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.db == nil {
		return nil
	}
	err := r.db.Close()
	r.db = nil
	return err
}

func (r *reconcileRuns) Runs(ctx context.Context, limit int) ([]console.ReconcileRun, error) {
	db, err := r.open(ctx)
	if err != nil {
		return nil, err
	}
	runs, _, err := reconcile.ListRuns(ctx, db, reconcile.Page{Size: limit})
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1146 {
		return nil, nil // reconcile never ran against this database
	}
	if err != nil {
		return nil, err
	}
	out := make([]console.ReconcileRun, 0, len(runs))
	for _, run := range runs {
		day, _ := time.Parse(time.DateOnly, run.Date)
		cr := console.ReconcileRun{Date: day, MoneyAtRisk: run.MoneyAtRisk, ReportPath: run.ReportPath, Totals: map[string]int64{}}
		for class, t := range run.Totals {
			if t != nil {
				cr.Totals[class] = t.Count
			}
		}
		pending, err := reconcile.RunPending(ctx, db, run.ID)
		if err != nil {
			return nil, err
		}
		for _, p := range pending {
			code := ""
			if p.Records.Order != nil {
				code = p.Records.Order.CouponCode
			}
			cr.Pending = append(cr.Pending, console.ReconcilePending{OrderNo: p.OrderNo, CouponCode: code, Detail: p.Reason})
		}
		out = append(out, cr)
	}
	return out, nil
}
