package reconcile

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// view is everything known about one order number: its latest order row,
// its payments and its coupon ledger rows, from the day's window and from
// the previous run's pending.
type view struct {
	orderNo  string
	order    *Order
	payments []Payment
	entries  []Entry
	// since is the day number (days since 1970-01-01) the order first went
	// pending, 0 when it was not pending before.
	since int32
	// changed is set when a state row of the order (order or payment) was
	// updated after as-of: its state at as-of is unknown.
	changed bool
}

// judgement holds what judging needs besides the view.
type judgement struct {
	asOf        int64 // Unix µs
	grace       int64 // µs
	today       int32 // day number of the run's date
	pendingDays int32
}

// Pending reasons.
const (
	reasonInFlight     = "in_flight"
	reasonChangedLater = "changed_after_as_of"
)

// judge decides one order: pending (in flight, with the reason), or judged,
// appending its findings to out. The view's slices are reordered.
func (j *judgement) judge(v *view, out []Finding) (findings []Finding, pendingReason string) {
	dedupe(v)
	latest := v.latest()
	inFlight := ""
	switch {
	case v.changed:
		inFlight = reasonChangedLater
	case latest > j.asOf-j.grace:
		inFlight = reasonInFlight
	}
	if inFlight != "" && (v.since == 0 || j.today-v.since < j.pendingDays) {
		return out, inFlight
	}
	return appendFindings(v, out), ""
}

func (v *view) latest() int64 {
	var t int64
	if v.order != nil {
		t = v.order.UpdatedAt
	}
	for i := range v.payments {
		t = max(t, v.payments[i].UpdatedAt)
	}
	for i := range v.entries {
		t = max(t, v.entries[i].CreatedAt)
	}
	return t
}

// dedupe keeps the latest row of each payment and the first of identical
// ledger rows (a carried pending row may be read again), and sorts the
// ledger by time (rows of one instant in op order, then by content, so the
// result does not depend on the order the sources delivered them in).
func dedupe(v *view) {
	if len(v.payments) > 1 {
		slices.SortStableFunc(v.payments, func(a, b Payment) int {
			return cmp.Or(strings.Compare(a.PaymentID, b.PaymentID), cmp.Compare(a.UpdatedAt, b.UpdatedAt), cmp.Compare(a.Status, b.Status))
		})
		n := 0
		for i := range v.payments {
			if i+1 < len(v.payments) && v.payments[i+1].PaymentID == v.payments[i].PaymentID {
				continue // a later row of the same payment follows
			}
			v.payments[n] = v.payments[i]
			n++
		}
		v.payments = v.payments[:n]
	}
	if len(v.entries) > 1 {
		slices.SortStableFunc(v.entries, func(a, b Entry) int {
			return cmp.Or(cmp.Compare(a.CreatedAt, b.CreatedAt), cmp.Compare(opRank[a.Op], opRank[b.Op]), cmp.Compare(a.Op, b.Op),
				strings.Compare(a.CouponCode, b.CouponCode), strings.Compare(a.GID, b.GID), strings.Compare(a.BranchID, b.BranchID),
				cmp.Compare(a.Discount, b.Discount))
		})
		n := 0
		for i := range v.entries {
			if n > 0 && sameEntry(&v.entries[n-1], &v.entries[i]) {
				continue
			}
			v.entries[n] = v.entries[i]
			n++
		}
		v.entries = v.entries[:n]
	}
}

// opRank orders the rows of one instant: a lock comes before what settles
// it (a saga writes LOCK and CONSUME in one transaction), a return last. It
// makes the result independent of the order sources return such rows in.
var opRank = [...]int{OpLock: 0, OpConsume: 1, OpRelease: 1, OpReturn: 2}

func sameEntry(a, b *Entry) bool {
	return a.CreatedAt == b.CreatedAt && a.Op == b.Op && a.CouponCode == b.CouponCode && a.GID == b.GID &&
		a.BranchID == b.BranchID && a.Discount == b.Discount && a.OrderNo == b.OrderNo
}

// couponState is what the ledger says of one coupon for one order.
type couponState struct {
	code     string
	locks    []Entry // outstanding: locked, not yet consumed or released
	consumed bool    // consumed and not returned
	consume  Entry   // the consuming row
}

// coupons walks the order's ledger rows (sorted by time) per coupon. A
// CONSUME or RELEASE settles the lock of its own gid (the coupon service's
// rule), or the oldest outstanding one when no lock of that gid is known.
func coupons(entries []Entry) []couponState {
	var cs []couponState
	for i := range entries {
		e := &entries[i]
		k := slices.IndexFunc(cs, func(c couponState) bool { return c.code == e.CouponCode })
		if k < 0 {
			cs = append(cs, couponState{code: e.CouponCode})
			k = len(cs) - 1
		}
		c := &cs[k]
		switch e.Op {
		case OpLock:
			c.locks = append(c.locks, *e)
		case OpConsume:
			c.settle(e.GID)
			c.consumed, c.consume = true, *e
		case OpRelease:
			c.settle(e.GID)
		case OpReturn:
			c.consumed = false
		}
	}
	return cs
}

func (c *couponState) settle(gid string) {
	if len(c.locks) == 0 {
		return
	}
	k := slices.IndexFunc(c.locks, func(l Entry) bool { return l.GID == gid })
	if k < 0 {
		k = 0
	}
	c.locks = slices.Delete(c.locks, k, k+1)
}

// appendFindings applies the matching rules to a judged order.
func appendFindings(v *view, out []Finding) []Finding {
	o := v.order
	var captured, frozen int64
	hasCaptured, refundedPay, openPay := false, false, false
	for _, p := range v.payments {
		switch p.Status {
		case PaymentCaptured:
			captured += p.Amount
			hasCaptured, openPay = true, true
		case PaymentFrozen:
			frozen += p.Amount
			openPay = true
		case PaymentRefunded:
			refundedPay = true
		}
	}
	cs := coupons(v.entries)
	base := func(class, code string, risk int64, detail string, args ...any) Finding {
		f := Finding{Class: class, OrderNo: v.orderNo, CouponCode: code, AmountAtRisk: risk, Detail: fmt.Sprintf(detail, args...)}
		if o != nil {
			f.OrderStatus, f.OrderAmount, f.UserID = o.Status.String(), o.Amount, o.UserID
		}
		return f
	}
	// notReturned reports the coupons a refunded order consumed and did
	// not get back: a Return that came while the coupon was still locked
	// for the order, before its Confirm, once answered OK with nothing to
	// return. A template that keeps used coupons (returnable false) shows
	// the same rows; the repair tells the two apart.
	notReturned := func() {
		for i := range cs {
			if c := &cs[i]; c.consumed {
				f := base(ClassRefundCouponNotReturned, c.code, c.consume.Discount, "order refunded but coupon %s, consumed at %s (gid %q), was not returned (ledger: %s)",
					c.code, fmtMicros(c.consume.CreatedAt), c.consume.GID, describeOps(v.entries, c.code))
				f.GID, f.BranchID = c.consume.GID, c.consume.BranchID
				if f.UserID == 0 {
					f.UserID = c.consume.UserID
				}
				out = append(out, f)
			}
		}
	}
	// A refunded order is consistent once its coupon came back.
	if o != nil && o.Status == OrderRefunded && refundedPay && !openPay {
		notReturned()
		return out
	}
	orphan := func(c *couponState) {
		l := &c.locks[0]
		f := base(ClassOrphanLock, c.code, l.Discount, "coupon %s locked at %s by gid %q (branch %q), never consumed or released; order %s",
			c.code, fmtMicros(l.CreatedAt), l.GID, l.BranchID, describeOrder(o))
		t := FromMicros(l.CreatedAt)
		f.GID, f.BranchID, f.LockedAt = l.GID, l.BranchID, &t
		if f.UserID == 0 {
			f.UserID = l.UserID
		}
		out = append(out, f)
	}

	if o == nil {
		if len(v.payments) > 0 {
			out = append(out, base(ClassPaymentWithoutOrder, "", captured+frozen, "payments without an order: %s", describePayments(v.payments)))
		}
		for i := range cs {
			c := &cs[i]
			if c.consumed {
				f := base(ClassCouponUsedOrderNotPaid, c.code, c.consume.Discount, "coupon %s consumed at %s (gid %q) for an order that does not exist",
					c.code, fmtMicros(c.consume.CreatedAt), c.consume.GID)
				f.UserID = c.consume.UserID
				out = append(out, f)
			} else if len(c.locks) > 0 {
				orphan(c)
			}
		}
		return out
	}

	switch o.Status {
	case OrderPaid:
		payable := o.Amount - o.Discount
		switch {
		case !hasCaptured:
			out = append(out, base(ClassOrderPaidWithoutPayment, o.CouponCode, payable, "order paid (amount %d, discount %d) but no payment captured: %s",
				o.Amount, o.Discount, describePayments(v.payments)))
		case captured != payable:
			out = append(out, base(ClassPaymentAmountMismatch, o.CouponCode, abs(captured-payable), "captured %d, want amount %d − discount %d = %d",
				captured, o.Amount, o.Discount, payable))
		}
		own := false
		for i := range cs {
			c := &cs[i]
			if c.code == o.CouponCode {
				own = true
				switch {
				case c.consumed:
					if c.consume.Discount != o.Discount {
						out = append(out, base(ClassDiscountMismatch, c.code, abs(o.Discount-c.consume.Discount), "order discount %d, coupon ledger discount %d",
							o.Discount, c.consume.Discount))
					}
				case len(c.locks) > 0:
					orphan(c)
				default:
					out = append(out, base(ClassOrderPaidCouponNotUsed, c.code, o.Discount, "order paid with coupon %s (discount %d) but the coupon was not consumed (ledger: %s)",
						c.code, o.Discount, describeOps(v.entries, c.code)))
				}
				continue
			}
			switch {
			case c.consumed:
				out = append(out, base(ClassDiscountMismatch, c.code, c.consume.Discount, "coupon %s (discount %d) consumed for the order, which records coupon %q with discount %d",
					c.code, c.consume.Discount, o.CouponCode, o.Discount))
			case len(c.locks) > 0:
				orphan(c)
			}
		}
		if !own && o.CouponCode != "" {
			out = append(out, base(ClassOrderPaidCouponNotUsed, o.CouponCode, o.Discount, "order paid with coupon %s (discount %d) but the coupon ledger has no row for it",
				o.CouponCode, o.Discount))
		}
		if o.CouponCode == "" && o.Discount != 0 && !slices.ContainsFunc(cs, func(c couponState) bool { return c.consumed }) {
			out = append(out, base(ClassDiscountMismatch, "", abs(o.Discount), "order discount %d without a coupon", o.Discount))
		}
	case OrderRefunded:
		// The payment was not refunded (that case returned above).
		switch {
		case hasCaptured:
			out = append(out, base(ClassPaymentAmountMismatch, o.CouponCode, captured, "order refunded but %d is still captured: %s", captured, describePayments(v.payments)))
		case len(v.payments) == 0:
			out = append(out, base(ClassOrderPaidWithoutPayment, o.CouponCode, o.Amount-o.Discount, "order refunded but it has no payment"))
		}
		for i := range cs {
			if c := &cs[i]; !c.consumed && len(c.locks) > 0 {
				orphan(c)
			}
		}
		notReturned()
	default: // PENDING or CANCELLED: not paid
		if hasCaptured {
			out = append(out, base(ClassPaymentAmountMismatch, o.CouponCode, captured, "%d captured for an order that is %s", captured, o.Status))
		}
		for i := range cs {
			c := &cs[i]
			if c.consumed {
				f := base(ClassCouponUsedOrderNotPaid, c.code, c.consume.Discount, "coupon %s consumed at %s (gid %q) but the order is %s",
					c.code, fmtMicros(c.consume.CreatedAt), c.consume.GID, o.Status)
				out = append(out, f)
			} else if len(c.locks) > 0 {
				orphan(c)
			}
		}
	}
	return out
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func fmtMicros(us int64) string { return FromMicros(us).Format("2006-01-02T15:04:05.999999Z07:00") }

func describeOrder(o *Order) string {
	if o == nil {
		return "missing"
	}
	return o.Status.String()
}

func describePayments(ps []Payment) string {
	if len(ps) == 0 {
		return "none"
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%s %s %d", p.PaymentID, p.Status, p.Amount)
	}
	return strings.Join(parts, ", ")
}

func describeOps(es []Entry, code string) string {
	var ops []string
	for _, e := range es {
		if e.CouponCode == code {
			ops = append(ops, e.Op.String())
		}
	}
	if len(ops) == 0 {
		return "none"
	}
	return strings.Join(ops, ", ")
}

// use is one CONSUME or RETURN of a coupon, for the per-coupon check.
type use struct {
	orderNo  string
	op       Op
	discount int64
	at       int64
	// carried marks a row from the previous run's pending, which that run
	// already checked: a coupon is reported only when a use of this run's
	// window is part of the double use.
	carried bool
}

// usedTwice checks one coupon's uses (sorted by time, stably): a CONSUME
// while another order still holds the coupon (consumed, not returned) is a
// second use. It returns at most one finding per coupon.
func usedTwice(code string, uses []use) (Finding, bool) {
	var holders []string
	var orders []string
	var extra []use
	fresh := false
	for _, u := range uses {
		switch u.op {
		case OpConsume:
			if slices.Contains(holders, u.orderNo) {
				continue // the same order's duplicate row
			}
			if len(holders) > 0 {
				extra = append(extra, u)
				fresh = fresh || !u.carried
				for _, h := range holders {
					if !slices.Contains(orders, h) {
						orders = append(orders, h)
					}
				}
				if !slices.Contains(orders, u.orderNo) {
					orders = append(orders, u.orderNo)
				}
			}
			holders = append(holders, u.orderNo)
		case OpReturn:
			holders = slices.DeleteFunc(holders, func(h string) bool { return h == u.orderNo })
		}
	}
	if len(extra) == 0 || !fresh {
		return Finding{}, false
	}
	var risk int64
	at := make([]string, len(extra))
	for i, u := range extra {
		risk += u.discount
		at[i] = fmt.Sprintf("%s at %s", u.orderNo, fmtMicros(u.at))
	}
	return Finding{
		Class: ClassCouponUsedTwice, OrderNo: extra[0].orderNo, CouponCode: code, AmountAtRisk: risk, Orders: orders,
		Detail: fmt.Sprintf("coupon %s consumed for %d orders (%s); consumed again while held: %s",
			code, len(orders), strings.Join(orders, ", "), strings.Join(at, "; ")),
	}, true
}
