package app

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/reconcile"
)

// reconcileRuns shows the console the runs `coupon reconcile` recorded in
// the main database (its default state database).
type reconcileRuns struct{ db *sql.DB }

var _ console.ReconcileRuns = reconcileRuns{}

func (r reconcileRuns) Runs(ctx context.Context, limit int) ([]console.ReconcileRun, error) {
	runs, _, err := reconcile.ListRuns(ctx, r.db, reconcile.Page{Size: limit})
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
		pending, err := reconcile.RunPending(ctx, r.db, run.ID)
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
