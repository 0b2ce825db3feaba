package gen

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/opencoupon/coupon/reconcile"
)

// LoadMySQL copies a generated dataset into the sample shop's orders and
// payments tables and the coupon shards' coupon_ledger (a user's rows go to
// shard user_id mod len(shards)), so the MySQL sources can be run on it.
// The tables must exist and, for refunds, allow the REFUNDED status.
func LoadMySQL(ctx context.Context, f Files, orders, payments *sql.DB, shards []*sql.DB) error {
	all := reconcile.Window{Start: -1 << 62, End: 1 << 62, AsOf: 1 << 62}
	ts := func(us int64) string { return reconcile.FromMicros(us).Format("2006-01-02 15:04:05.000000") }

	ob := newBatch(orders, `INSERT INTO orders (order_no, user_id, amount, currency, items, coupon_code, discount, payable, gid, status, created_at, updated_at) VALUES `, 12)
	err := reconcile.CSVOrders{Path: f.Orders}.ReadOrders(ctx, all, func(o *reconcile.Order) error {
		return ob.add(ctx, o.OrderNo, o.UserID, o.Amount, "CNY", "[]", o.CouponCode, o.Discount, o.Payable, "gen-"+o.OrderNo, o.Status.String(), ts(o.UpdatedAt), ts(o.UpdatedAt))
	})
	if err == nil {
		err = ob.flush(ctx)
	}
	if err != nil {
		return fmt.Errorf("load orders: %w", err)
	}
	pb := newBatch(payments, `INSERT INTO payments (order_no, gid, user_id, amount, status, created_at, updated_at) VALUES `, 7)
	err = reconcile.CSVPayments{Path: f.Payments}.ReadPayments(ctx, all, func(p *reconcile.Payment) error {
		return pb.add(ctx, p.OrderNo, "gen-"+p.OrderNo, 1, p.Amount, p.Status.String(), ts(p.UpdatedAt), ts(p.UpdatedAt))
	})
	if err == nil {
		err = pb.flush(ctx)
	}
	if err != nil {
		return fmt.Errorf("load payments: %w", err)
	}
	lb := make([]*batch, len(shards))
	for i, db := range shards {
		lb[i] = newBatch(db, `INSERT INTO coupon_ledger (op, order_no, gid, branch_id, coupon_id, coupon_code, user_id, template_id, discount_amount, created_at) VALUES `, 10)
	}
	err = reconcile.CSVCoupons{Path: f.Coupons}.ReadLedger(ctx, all, func(e *reconcile.Entry) error {
		return lb[e.UserID%int64(len(shards))].add(ctx, e.Op.String(), e.OrderNo, e.GID, e.BranchID, 1, e.CouponCode, e.UserID, e.TemplateID, e.Discount, ts(e.CreatedAt))
	})
	for _, b := range lb {
		if err == nil {
			err = b.flush(ctx)
		}
	}
	if err != nil {
		return fmt.Errorf("load coupon ledger: %w", err)
	}
	return nil
}

// batch is a multi-row INSERT of up to 500 rows.
type batch struct {
	db     *sql.DB
	prefix string
	row    string
	args   []any
	n      int
}

func newBatch(db *sql.DB, prefix string, cols int) *batch {
	return &batch{db: db, prefix: prefix, row: "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"}
}

func (b *batch) add(ctx context.Context, vals ...any) error {
	for _, v := range vals {
		if s, ok := v.(string); ok {
			v = strings.Clone(s) // the CSV reader reuses its buffer
		}
		b.args = append(b.args, v)
	}
	if b.n++; b.n == 500 {
		return b.flush(ctx)
	}
	return nil
}

func (b *batch) flush(ctx context.Context) error {
	if b.n == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	q := b.prefix + strings.TrimSuffix(strings.Repeat(b.row+",", b.n), ",")
	if _, err := b.db.ExecContext(ctx, q, b.args...); err != nil {
		return err
	}
	b.args, b.n = b.args[:0], 0
	return nil
}
