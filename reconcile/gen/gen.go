// Package gen generates reconciliation datasets in the CSV contract: a day
// of consistent orders (paid with and without coupons, cancelled, refunded
// with the coupon returned, saga-style lock+consume), and, on
// request, one or more of every finding class, orders in flight inside the
// grace window and records outside the day, with the findings and pending
// orders a correct reconciliation must report. Tests and `couponlab bench
// reconcile` use it.
package gen

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/opencoupon/coupon/reconcile"
)

// Spec describes a dataset.
type Spec struct {
	// Date is the day (midnight UTC) the orders fall in.
	Date time.Time
	// Orders consistent orders ("noise").
	Orders int
	// Inject adds Inject of every finding class, plus in-flight orders and
	// records outside the day.
	Inject int
	// Grace of the run the dataset is meant for (in-flight orders are put
	// inside it, consistent ones before it). Default 10m.
	Grace time.Duration
	Seed  uint64
	// Reordered writes the columns in another order, with extra columns.
	Reordered bool
}

// Files are the three CSV files.
type Files struct {
	Orders, Payments, Coupons string
}

// Expected is what a correct reconciliation reports.
type Expected struct {
	Findings map[reconcile.Key]bool
	Pending  map[string]bool
	// Rows counts the rows written (all three files, header excluded).
	Rows, LedgerRows int64
}

// Write generates the dataset into dir.
func Write(dir string, s Spec) (Files, Expected, error) {
	if s.Grace <= 0 {
		s.Grace = 10 * time.Minute
	}
	f := Files{filepath.Join(dir, "orders.csv"), filepath.Join(dir, "payments.csv"), filepath.Join(dir, "coupons.csv")}
	g, err := newWriter(f, s)
	if err != nil {
		return f, Expected{}, err
	}
	g.noise()
	for k := range s.Inject {
		g.inject(k)
	}
	err = g.close()
	return f, g.exp, err
}

type writer struct {
	s                 Spec
	rng               *rand.Rand
	files             []*os.File
	orders, pays, cps *bufio.Writer
	line              []byte
	exp               Expected
	start, end        time.Time
	seq               int
}

func newWriter(f Files, s Spec) (*writer, error) {
	g := &writer{s: s, rng: rand.New(rand.NewPCG(s.Seed, 0x5eed)), start: s.Date, end: s.Date.AddDate(0, 0, 1),
		exp: Expected{Findings: map[reconcile.Key]bool{}, Pending: map[string]bool{}}}
	for _, p := range []string{f.Orders, f.Payments, f.Coupons} {
		fh, err := os.Create(p)
		if err != nil {
			g.close()
			return nil, err
		}
		g.files = append(g.files, fh)
	}
	g.orders, g.pays, g.cps = bufio.NewWriterSize(g.files[0], 1<<20), bufio.NewWriterSize(g.files[1], 1<<20), bufio.NewWriterSize(g.files[2], 1<<20)
	if s.Reordered {
		g.orders.WriteString("updated_at,currency,status,order_no,payable_amount,amount,coupon_code,user_id,discount_amount\n")
		g.pays.WriteString("amount,status,order_no,method,updated_at,payment_id\n")
		g.cps.WriteString("created_at,gid,op,branch_id,coupon_code,order_no,template_id,user_id,discount_amount,note\n")
	} else {
		g.orders.WriteString("order_no,user_id,status,amount,coupon_code,discount_amount,payable_amount,updated_at\n")
		g.pays.WriteString("payment_id,order_no,status,amount,updated_at\n")
		g.cps.WriteString("order_no,coupon_code,op,discount_amount,user_id,template_id,gid,created_at,branch_id\n")
	}
	return g, nil
}

func (g *writer) close() error {
	var first error
	for i, b := range []*bufio.Writer{g.orders, g.pays, g.cps} {
		if b == nil || i >= len(g.files) {
			continue
		}
		if err := b.Flush(); err != nil && first == nil {
			first = err
		}
	}
	for _, f := range g.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// order is one generated order: its row (if any) and what to write.
type order struct {
	no       string
	user     int64
	status   string // "" for no order row
	amount   int64
	coupon   string
	discount int64
	at       time.Time
}

func appendTime(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
}

func (g *writer) writeOrder(o order) {
	if o.status == "" {
		return
	}
	b := g.line[:0]
	payable := o.amount - o.discount
	if g.s.Reordered {
		b = appendTime(b, o.at)
		b = append(b, ",CNY,"...)
		b = append(b, o.status...)
		b = append(b, ',')
		b = append(b, o.no...)
		b = append(b, ',')
		b = strconv.AppendInt(b, payable, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, o.amount, 10)
		b = append(b, ',')
		b = append(b, o.coupon...)
		b = append(b, ',')
		b = strconv.AppendInt(b, o.user, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, o.discount, 10)
	} else {
		b = append(b, o.no...)
		b = append(b, ',')
		b = strconv.AppendInt(b, o.user, 10)
		b = append(b, ',')
		b = append(b, o.status...)
		b = append(b, ',')
		b = strconv.AppendInt(b, o.amount, 10)
		b = append(b, ',')
		b = append(b, o.coupon...)
		b = append(b, ',')
		b = strconv.AppendInt(b, o.discount, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, payable, 10)
		b = append(b, ',')
		b = appendTime(b, o.at)
	}
	b = append(b, '\n')
	g.orders.Write(b)
	g.line = b
	g.exp.Rows++
}

func (g *writer) writePayment(o order, status string, amount int64, at time.Time) {
	b := g.line[:0]
	id := "P" + o.no
	if g.s.Reordered {
		b = strconv.AppendInt(b, amount, 10)
		b = append(b, ',')
		b = append(b, status...)
		b = append(b, ',')
		b = append(b, o.no...)
		b = append(b, `,"card, visa",`...)
		b = appendTime(b, at)
		b = append(b, ',')
		b = append(b, id...)
	} else {
		b = append(b, id...)
		b = append(b, ',')
		b = append(b, o.no...)
		b = append(b, ',')
		b = append(b, status...)
		b = append(b, ',')
		b = strconv.AppendInt(b, amount, 10)
		b = append(b, ',')
		b = appendTime(b, at)
	}
	b = append(b, '\n')
	g.pays.Write(b)
	g.line = b
	g.exp.Rows++
}

func (g *writer) writeEntry(o order, code, op string, discount int64, gid string, at time.Time) {
	b := g.line[:0]
	tpl := int64(len(code)%7 + 1)
	if g.s.Reordered {
		b = appendTime(b, at)
		b = append(b, ',')
		b = append(b, gid...)
		b = append(b, ',')
		b = append(b, op...)
		b = append(b, ",01,"...)
		b = append(b, code...)
		b = append(b, ',')
		b = append(b, o.no...)
		b = append(b, ',')
		b = strconv.AppendInt(b, tpl, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, o.user, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, discount, 10)
		b = append(b, `,"a ""quoted"" note"`...)
	} else {
		b = append(b, o.no...)
		b = append(b, ',')
		b = append(b, code...)
		b = append(b, ',')
		b = append(b, op...)
		b = append(b, ',')
		b = strconv.AppendInt(b, discount, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, o.user, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, tpl, 10)
		b = append(b, ',')
		b = append(b, gid...)
		b = append(b, ',')
		b = appendTime(b, at)
		b = append(b, ",01"...)
	}
	b = append(b, '\n')
	g.cps.Write(b)
	g.line = b
	g.exp.Rows++
	g.exp.LedgerRows++
}

// newOrder makes an order at a time before the grace window.
func (g *writer) newOrder(prefix string, withCoupon bool) order {
	g.seq++
	o := order{no: fmt.Sprintf("%s%010d", prefix, g.seq), user: int64(g.seq%100000 + 1), amount: 1000 + g.rng.Int64N(100000)}
	span := g.end.Sub(g.start) - g.s.Grace - 2*time.Minute
	o.at = g.start.Add(time.Duration(g.rng.Int64N(int64(span))))
	if withCoupon {
		o.coupon = "C" + strconv.FormatInt(int64(g.seq)*7919+1000003, 36)
		o.discount = 100 + g.rng.Int64N(900)
	}
	return o
}

func gidOf(o order) string {
	return "shop-" + o.no + "-" + strconv.FormatUint(uint64(len(o.no))*2654435761, 16)
}

// paid writes a consistent paid order (lock+consume when with a coupon).
func (g *writer) paid(o order) {
	ms := time.Millisecond
	if o.coupon != "" {
		g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
		g.writeEntry(o, o.coupon, "CONSUME", o.discount, gidOf(o), o.at.Add(20*ms))
	}
	g.writePayment(o, "CAPTURED", o.amount-o.discount, o.at.Add(30*ms))
	o.status, o.at = "PAID", o.at.Add(40*ms)
	g.writeOrder(o)
}

func (g *writer) noise() {
	ms := time.Millisecond
	for i := range g.s.Orders {
		switch i % 10 {
		case 0, 1, 2, 3: // paid with a coupon
			g.paid(g.newOrder("O", true))
		case 4, 5, 6: // paid without
			g.paid(g.newOrder("O", false))
		case 7: // payment refused: coupon released, no payment
			o := g.newOrder("O", true)
			g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
			g.writeEntry(o, o.coupon, "RELEASE", o.discount, gidOf(o), o.at.Add(15*ms))
			o.status, o.discount, o.at = "CANCELLED", 0, o.at.Add(20*ms)
			g.writeOrder(o)
		case 8: // refunded, coupon returned (a refund that keeps it is REFUND_COUPON_NOT_RETURNED)
			o := g.newOrder("O", true)
			gid := gidOf(o)
			g.writeEntry(o, o.coupon, "LOCK", o.discount, gid, o.at)
			g.writeEntry(o, o.coupon, "CONSUME", o.discount, gid, o.at.Add(10*ms))
			g.writeEntry(o, o.coupon, "RETURN", o.discount, "refund-"+o.no, o.at.Add(time.Minute))
			g.writePayment(o, "REFUNDED", o.amount-o.discount, o.at.Add(time.Minute))
			o.status, o.at = "REFUNDED", o.at.Add(time.Minute+ms)
			g.writeOrder(o)
		case 9: // a saga: lock and consume in one transaction; or cancelled with a released payment
			o := g.newOrder("O", true)
			if i%20 == 9 {
				gid := "saga-" + o.no
				g.writeEntry(o, o.coupon, "LOCK", o.discount, gid, o.at)
				g.writeEntry(o, o.coupon, "CONSUME", o.discount, gid, o.at)
				g.writePayment(o, "CAPTURED", o.amount-o.discount, o.at.Add(ms))
				o.status, o.at = "PAID", o.at.Add(2*ms)
				g.writeOrder(o)
				continue
			}
			g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
			g.writePayment(o, "RELEASED", o.amount-o.discount, o.at.Add(10*ms))
			g.writeEntry(o, o.coupon, "RELEASE", o.discount, gidOf(o), o.at.Add(20*ms))
			o.status, o.at = "CANCELLED", o.at.Add(30*ms)
			g.writeOrder(o)
		}
	}
}

func (g *writer) want(class string, o order, code string) {
	g.exp.Findings[reconcile.Key{Class: class, OrderNo: o.no, CouponCode: code}] = true
}

// inject writes one of every class, in-flight orders and out-of-day rows.
func (g *writer) inject(k int) {
	ms := time.Millisecond
	p := fmt.Sprintf("X%d-", k)

	// Coupon consumed, order cancelled; and consumed for no order at all.
	o := g.newOrder(p+"usedcancelled", true)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	g.writeEntry(o, o.coupon, "CONSUME", o.discount, gidOf(o), o.at.Add(ms))
	g.writePayment(o, "RELEASED", o.amount-o.discount, o.at.Add(2*ms))
	o2 := o
	o2.status, o2.at = "CANCELLED", o.at.Add(3*ms)
	g.writeOrder(o2)
	g.want(reconcile.ClassCouponUsedOrderNotPaid, o, o.coupon)
	o = g.newOrder(p+"usednoorder", true)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	g.writeEntry(o, o.coupon, "CONSUME", o.discount, gidOf(o), o.at.Add(ms))
	g.want(reconcile.ClassCouponUsedOrderNotPaid, o, o.coupon)

	// Paid with a coupon that was locked and released: reusable.
	o = g.newOrder(p+"notused", true)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	g.writeEntry(o, o.coupon, "RELEASE", o.discount, gidOf(o), o.at.Add(ms))
	g.writePayment(o, "CAPTURED", o.amount-o.discount, o.at.Add(2*ms))
	o2 = o
	o2.status, o2.at = "PAID", o.at.Add(3*ms)
	g.writeOrder(o2)
	g.want(reconcile.ClassOrderPaidCouponNotUsed, o, o.coupon)

	// The order says one discount, the ledger another; the payment follows the order.
	o = g.newOrder(p+"discount", true)
	g.writeEntry(o, o.coupon, "LOCK", o.discount+50, gidOf(o), o.at)
	g.writeEntry(o, o.coupon, "CONSUME", o.discount+50, gidOf(o), o.at.Add(ms))
	g.writePayment(o, "CAPTURED", o.amount-o.discount, o.at.Add(2*ms))
	o2 = o
	o2.status, o2.at = "PAID", o.at.Add(3*ms)
	g.writeOrder(o2)
	g.want(reconcile.ClassDiscountMismatch, o, o.coupon)

	// Captured less than amount − discount.
	o = g.newOrder(p+"payamount", true)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	g.writeEntry(o, o.coupon, "CONSUME", o.discount, gidOf(o), o.at.Add(ms))
	g.writePayment(o, "CAPTURED", o.amount-o.discount-77, o.at.Add(2*ms))
	o2 = o
	o2.status, o2.at = "PAID", o.at.Add(3*ms)
	g.writeOrder(o2)
	g.want(reconcile.ClassPaymentAmountMismatch, o, o.coupon)

	// One coupon consumed for two paid orders.
	a := g.newOrder(p+"twiceA", true)
	b := g.newOrder(p+"twiceB", true)
	b.coupon, b.discount = a.coupon, a.discount
	if b.at.Before(a.at) {
		a, b = b, a
	}
	g.paid(a)
	g.paid(b)
	g.want(reconcile.ClassCouponUsedTwice, b, a.coupon)

	// Locked by a transaction that died: order pending, payment frozen.
	o = g.newOrder(p+"orphan", true)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	g.writePayment(o, "FROZEN", o.amount-o.discount, o.at.Add(ms))
	o2 = o
	o2.status, o2.discount, o2.at = "PENDING", 0, o.at.Add(2*ms)
	g.writeOrder(o2)
	g.want(reconcile.ClassOrphanLock, o, o.coupon)

	// A captured payment for an order that does not exist.
	o = g.newOrder(p+"payonly", false)
	g.writePayment(o, "CAPTURED", o.amount, o.at)
	g.want(reconcile.ClassPaymentWithoutOrder, o, "")

	// A paid order with no payment (and one whose payment is only frozen).
	o = g.newOrder(p+"nopay", false)
	o2 = o
	o2.status = "PAID"
	g.writeOrder(o2)
	g.want(reconcile.ClassOrderPaidWithoutPayment, o, "")
	o = g.newOrder(p+"frozenpay", false)
	g.writePayment(o, "FROZEN", o.amount, o.at)
	o2 = o
	o2.status, o2.at = "PAID", o.at.Add(ms)
	g.writeOrder(o2)
	g.want(reconcile.ClassOrderPaidWithoutPayment, o, "")

	// Refunded, payment refunded, but the coupon was never returned.
	o = g.newOrder(p+"notreturned", true)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	g.writeEntry(o, o.coupon, "CONSUME", o.discount, gidOf(o), o.at.Add(ms))
	g.writePayment(o, "REFUNDED", o.amount-o.discount, o.at.Add(2*ms))
	o2 = o
	o2.status, o2.at = "REFUNDED", o.at.Add(3*ms)
	g.writeOrder(o2)
	g.want(reconcile.ClassRefundCouponNotReturned, o, o.coupon)

	// In flight inside the grace window: a lock with nothing else yet, and
	// a paid order whose records are all recent. Pending, not findings.
	asOf := g.end
	o = g.newOrder(p+"inflight", true)
	o.at = asOf.Add(-g.s.Grace / 3)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	g.exp.Pending[o.no] = true
	o = g.newOrder(p+"inflightpaid", true)
	o.at = asOf.Add(-g.s.Grace / 2)
	g.paid(o)
	g.exp.Pending[o.no] = true
	// An old lock whose order changed just now: in flight as a whole.
	o = g.newOrder(p+"inflightorder", true)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	o2 = o
	o2.status, o2.at = "PENDING", asOf.Add(-time.Second)
	g.writeOrder(o2)
	g.exp.Pending[o.no] = true

	// Outside the day: broken orders the day before and the day after,
	// which must be ignored.
	o = g.newOrder(p+"yesterday", true)
	o.at = g.start.Add(-time.Hour)
	g.writeEntry(o, o.coupon, "CONSUME", o.discount, gidOf(o), o.at)
	g.writePayment(o, "CAPTURED", 1, o.at)
	o = g.newOrder(p+"tomorrow", true)
	o.at = g.end.Add(time.Hour)
	g.writeEntry(o, o.coupon, "LOCK", o.discount, gidOf(o), o.at)
	g.writePayment(o, "CAPTURED", 1, o.at)
	o2 = o
	o2.status = "CANCELLED"
	g.writeOrder(o2)
}
