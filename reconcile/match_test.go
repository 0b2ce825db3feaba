package reconcile_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/reconcile"
)

// books is an in-memory source of the three ledgers.
type books struct {
	orders   []reconcile.Order
	payments []reconcile.Payment
	entries  []reconcile.Entry
}

func (b *books) ReadOrders(_ context.Context, _ reconcile.Window, emit func(*reconcile.Order) error) error {
	for _, o := range b.orders {
		if err := emit(&o); err != nil {
			return err
		}
	}
	return nil
}

func (b *books) ReadPayments(_ context.Context, _ reconcile.Window, emit func(*reconcile.Payment) error) error {
	for _, p := range b.payments {
		if err := emit(&p); err != nil {
			return err
		}
	}
	return nil
}

func (b *books) ReadLedger(_ context.Context, _ reconcile.Window, emit func(*reconcile.Entry) error) error {
	for _, e := range b.entries {
		if err := emit(&e); err != nil {
			return err
		}
	}
	return nil
}

func (b *books) sources() reconcile.Sources {
	return reconcile.Sources{Orders: b, Payments: b, Ledger: b}
}

// at is a time on the test day (negative hours reach the day before).
func at(h, m, s int) int64 {
	return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second).UnixMicro()
}

func order(no string, st reconcile.OrderStatus, amount int64, code string, discount int64, t int64) reconcile.Order {
	return reconcile.Order{OrderNo: no, UserID: 1, Status: st, Amount: amount, CouponCode: code, Discount: discount, Payable: amount - discount, UpdatedAt: t}
}

func pay(no string, st reconcile.PaymentStatus, amount int64, t int64) reconcile.Payment {
	return reconcile.Payment{PaymentID: "p-" + no, OrderNo: no, Status: st, Amount: amount, UpdatedAt: t}
}

func entry(no, code string, op reconcile.Op, discount int64, gid string, t int64) reconcile.Entry {
	return reconcile.Entry{OrderNo: no, CouponCode: code, Op: op, Discount: discount, UserID: 1, TemplateID: 1, GID: gid, BranchID: "01", CreatedAt: t}
}

// paidWithCoupon is a consistent paid order with a locked and consumed coupon.
func paidWithCoupon(b *books, no, code string, t int64) {
	b.entries = append(b.entries, entry(no, code, reconcile.OpLock, 100, "g-"+no, t), entry(no, code, reconcile.OpConsume, 100, "g-"+no, t+1000))
	b.payments = append(b.payments, pay(no, reconcile.PaymentCaptured, 900, t+2000))
	b.orders = append(b.orders, order(no, reconcile.OrderPaid, 1000, code, 100, t+3000))
}

type key = reconcile.Key

func TestMatchRules(t *testing.T) {
	const (
		L, C, R, Ret = reconcile.OpLock, reconcile.OpConsume, reconcile.OpRelease, reconcile.OpReturn
	)
	tests := []struct {
		name        string
		books       func(b *books)
		asOf        time.Time
		want        []key
		wantPending []string
	}{
		{"paid with a coupon", func(b *books) { paidWithCoupon(b, "o1", "C1", at(10, 0, 0)) }, time.Time{}, nil, nil},
		{"refunded: coupon returned, or not", func(b *books) {
			for _, no := range []string{"o1", "o2"} {
				b.entries = append(b.entries, entry(no, "C"+no, L, 100, "g", at(9, 0, 0)), entry(no, "C"+no, C, 100, "g", at(9, 0, 1)))
				b.payments = append(b.payments, pay(no, reconcile.PaymentRefunded, 900, at(11, 0, 0)))
				b.orders = append(b.orders, order(no, reconcile.OrderRefunded, 1000, "C"+no, 100, at(11, 0, 0)))
			}
			b.entries = append(b.entries, entry("o1", "Co1", Ret, 100, "refund", at(11, 0, 0)))
		}, time.Time{}, []key{{reconcile.ClassRefundCouponNotReturned, "o2", "Co2"}}, nil},
		{"refunded order with its payment still captured", func(b *books) {
			b.payments = append(b.payments, pay("o1", reconcile.PaymentCaptured, 1000, at(9, 0, 0)))
			b.orders = append(b.orders, order("o1", reconcile.OrderRefunded, 1000, "", 0, at(11, 0, 0)))
		}, time.Time{}, []key{{reconcile.ClassPaymentAmountMismatch, "o1", ""}}, nil},
		{"saga: lock and consume at one instant", func(b *books) {
			b.entries = append(b.entries, entry("o1", "C1", L, 100, "saga", at(9, 0, 0)), entry("o1", "C1", C, 100, "saga", at(9, 0, 0)))
			b.payments = append(b.payments, pay("o1", reconcile.PaymentCaptured, 900, at(9, 0, 1)))
			b.orders = append(b.orders, order("o1", reconcile.OrderPaid, 1000, "C1", 100, at(9, 0, 1)))
		}, time.Time{}, nil, nil},
		{"cancelled order: lock released, payment released", func(b *books) {
			b.entries = append(b.entries, entry("o1", "C1", L, 100, "g", at(9, 0, 0)), entry("o1", "C1", R, 100, "g", at(9, 0, 1)))
			b.payments = append(b.payments, pay("o1", reconcile.PaymentReleased, 900, at(9, 0, 1)))
			b.orders = append(b.orders, order("o1", reconcile.OrderCancelled, 1000, "C1", 0, at(9, 0, 2)))
		}, time.Time{}, nil, nil},
		{"captured for a cancelled order", func(b *books) {
			b.payments = append(b.payments, pay("o1", reconcile.PaymentCaptured, 900, at(9, 0, 1)))
			b.orders = append(b.orders, order("o1", reconcile.OrderCancelled, 1000, "", 0, at(9, 0, 2)))
		}, time.Time{}, []key{{reconcile.ClassPaymentAmountMismatch, "o1", ""}}, nil},
		{"paid order whose coupon is still locked", func(b *books) {
			b.entries = append(b.entries, entry("o1", "C1", L, 100, "g", at(9, 0, 0)))
			b.payments = append(b.payments, pay("o1", reconcile.PaymentCaptured, 900, at(9, 0, 1)))
			b.orders = append(b.orders, order("o1", reconcile.OrderPaid, 1000, "C1", 100, at(9, 0, 2)))
		}, time.Time{}, []key{{reconcile.ClassOrphanLock, "o1", "C1"}}, nil},
		{"paid order consumed another coupon than it records", func(b *books) {
			b.entries = append(b.entries, entry("o1", "C2", L, 100, "g", at(9, 0, 0)), entry("o1", "C2", C, 100, "g", at(9, 0, 1)))
			b.payments = append(b.payments, pay("o1", reconcile.PaymentCaptured, 900, at(9, 0, 1)))
			b.orders = append(b.orders, order("o1", reconcile.OrderPaid, 1000, "C1", 100, at(9, 0, 2)))
		}, time.Time{}, []key{{reconcile.ClassDiscountMismatch, "o1", "C2"}, {reconcile.ClassOrderPaidCouponNotUsed, "o1", "C1"}}, nil},
		{"a returned coupon used again is one use at a time", func(b *books) {
			paidWithCoupon(b, "o1", "C1", at(8, 0, 0))
			b.entries = append(b.entries, entry("o1", "C1", Ret, 100, "refund", at(9, 0, 0)))
			b.payments[0].Status = reconcile.PaymentRefunded
			b.orders[0].Status = reconcile.OrderRefunded
			paidWithCoupon(b, "o2", "C1", at(10, 0, 0))
		}, time.Time{}, nil, nil},
		{"one coupon, three orders: one finding", func(b *books) {
			paidWithCoupon(b, "o1", "C1", at(8, 0, 0))
			paidWithCoupon(b, "o2", "C1", at(9, 0, 0))
			paidWithCoupon(b, "o3", "C1", at(10, 0, 0))
		}, time.Time{}, []key{{reconcile.ClassCouponUsedTwice, "o2", "C1"}}, nil},
		{"as-of: later ledger rows did not exist yet", func(b *books) {
			b.entries = append(b.entries, entry("o1", "C1", L, 100, "g", at(8, 0, 0)), entry("o1", "C1", C, 100, "g", at(13, 0, 0)))
		}, day.Add(12 * time.Hour), []key{{reconcile.ClassOrphanLock, "o1", "C1"}}, nil},
		{"as-of: an order changed later is pending", func(b *books) {
			b.entries = append(b.entries, entry("o1", "C1", L, 100, "g", at(8, 0, 0)))
			b.orders = append(b.orders, order("o1", reconcile.OrderPaid, 1000, "C1", 100, at(13, 0, 0)))
		}, day.Add(12 * time.Hour), nil, []string{"o1"}},
		{"state rows from before the day complete an order", func(b *books) {
			b.payments = append(b.payments, pay("o1", reconcile.PaymentCaptured, 900, at(-2, 0, 0)))
			b.orders = append(b.orders, order("o1", reconcile.OrderPaid, 1000, "C1", 100, at(-2, 0, 0)))
			b.entries = append(b.entries, entry("o1", "C1", C, 100, "g", at(0, 5, 0)))               // a late Confirm
			b.orders = append(b.orders, order("o2", reconcile.OrderPaid, 1000, "", 0, at(-3, 0, 0))) // alone: not today's
		}, time.Time{}, nil, nil},
		{"payment retried: the latest row of a payment counts", func(b *books) {
			b.payments = append(b.payments, pay("o1", reconcile.PaymentFrozen, 1000, at(9, 0, 0)), pay("o1", reconcile.PaymentCaptured, 1000, at(9, 0, 1)))
			b.orders = append(b.orders, order("o1", reconcile.OrderPaid, 1000, "", 0, at(9, 0, 2)))
		}, time.Time{}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &books{}
			tt.books(b)
			_, findings, pending := run(t, reconcile.Options{AsOf: tt.asOf}, b.sources())
			want := map[key]bool{}
			for _, k := range tt.want {
				want[k] = true
			}
			if d := diffSets(keys(findings), want); d != "" {
				t.Errorf("findings differ (+got -want):\n%s\nfindings: %+v", d, findings)
			}
			wantP := map[string]bool{}
			for _, p := range tt.wantPending {
				wantP[p] = true
			}
			if d := diffSets(pendingSet(pending), wantP); d != "" {
				t.Errorf("pending differ (+got -want):\n%s", d)
			}
		})
	}
}

// TestPendingCarried runs two days: what is in flight at the end of the
// first is re-checked, with its records, by the second.
func TestPendingCarried(t *testing.T) {
	const L, C = reconcile.OpLock, reconcile.OpConsume
	d1 := &books{}
	// Settles just after midnight.
	d1.entries = append(d1.entries, entry("o1", "C1", L, 100, "g1", at(23, 58, 0)))
	// Never settles.
	d1.entries = append(d1.entries, entry("o2", "C2", L, 100, "g2", at(23, 57, 0)))
	// Consumes C3 just before midnight; C3 is consumed again tomorrow by o4.
	paidWithCoupon(d1, "o3", "C3", at(23, 59, 0))
	_, findings, pending := run(t, reconcile.Options{}, d1.sources())
	if len(findings) != 0 || len(pending) != 3 {
		t.Fatalf("day 1: %d findings %+v, %d pending; want 0 and 3", len(findings), findings, len(pending))
	}

	next := day.AddDate(0, 0, 1)
	h := func(hh, mm, ss int) int64 {
		return next.Add(time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute + time.Duration(ss)*time.Second).UnixMicro()
	}
	d2 := &books{}
	d2.entries = append(d2.entries, entry("o1", "C1", C, 100, "g1", h(0, 0, 1)))
	d2.payments = append(d2.payments, pay("o1", reconcile.PaymentCaptured, 900, h(0, 0, 2)))
	d2.orders = append(d2.orders, order("o1", reconcile.OrderPaid, 1000, "C1", 100, h(0, 0, 3)))
	paidWithCoupon(d2, "o4", "C3", h(8, 0, 0))
	res, findings, pending := run(t, reconcile.Options{Date: next, Carried: pending}, d2.sources())
	want := map[key]bool{{reconcile.ClassOrphanLock, "o2", "C2"}: true, {reconcile.ClassCouponUsedTwice, "o4", "C3"}: true}
	if d := diffSets(keys(findings), want); d != "" {
		t.Errorf("day 2 findings differ (+got -want):\n%s", d)
	}
	for _, f := range findings {
		if f.Class == reconcile.ClassOrphanLock && !strings.Contains(f.Detail, "pending since 2026-03-10") {
			t.Errorf("orphan detail %q does not say since when it was pending", f.Detail)
		}
	}
	if len(pending) != 0 || res.Rows.Carried != 3 {
		t.Errorf("day 2: %d pending, %d carried; want 0 and 3", len(pending), res.Rows.Carried)
	}
}

// TestStalePending judges an order still in flight after pending_days.
func TestStalePending(t *testing.T) {
	const L = reconcile.OpLock
	b := &books{}
	b.entries = append(b.entries, entry("o1", "C1", L, 100, "g1", at(23, 58, 0)))
	_, _, pending := run(t, reconcile.Options{}, b.sources())
	if len(pending) != 1 {
		t.Fatalf("%d pending; want 1", len(pending))
	}
	tests := []struct {
		since     string
		wantFound bool
	}{
		{"2026-03-10", false}, // first day pending: still pending
		{"2026-03-08", false}, // two days
		{"2026-03-07", true},  // three days: judged
	}
	for _, tt := range tests {
		t.Run(tt.since, func(t *testing.T) {
			carried := pending[0]
			carried.Since = tt.since
			_, findings, still := run(t, reconcile.Options{Carried: []reconcile.Pending{carried}, PendingDays: 3}, b.sources())
			if got := len(findings) == 1; got != tt.wantFound || len(still) == len(findings) {
				t.Errorf("since %s: %d findings, %d pending; want judged %v", tt.since, len(findings), len(still), tt.wantFound)
			}
		})
	}
}
