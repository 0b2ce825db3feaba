// Package reconcile is the nightly three-way match of the order, payment
// and coupon ledgers: it streams the three inputs of one day from CSV files
// or MySQL, joins them by order number with memory bounded whatever the row
// count (hash partitions spilled to disk, each joined in memory), and writes
// the findings finance reads (discrepancies.jsonl, summary.md, report.html)
// plus the orders still in flight (pending.jsonl) for the next day's run.
// Repairs of orphan coupon locks go through the coupon service's own Cancel,
// and of coupons a refund did not get back through its ReturnCoupon.
package reconcile

import (
	"time"
)

// Finding classes. The names are a contract: finance tooling keys on them.
const (
	// A coupon was consumed for an order that is missing, cancelled or unpaid.
	ClassCouponUsedOrderNotPaid = "COUPON_USED_ORDER_NOT_PAID"
	// An order was paid with a coupon that was not consumed.
	ClassOrderPaidCouponNotUsed = "ORDER_PAID_COUPON_NOT_USED"
	// The order's discount differs from the coupon ledger's.
	ClassDiscountMismatch = "DISCOUNT_MISMATCH"
	// The captured amount differs from amount − discount.
	ClassPaymentAmountMismatch = "PAYMENT_AMOUNT_MISMATCH"
	// One coupon was consumed for more than one order.
	ClassCouponUsedTwice = "COUPON_USED_TWICE"
	// A coupon was locked and never consumed or released.
	ClassOrphanLock = "ORPHAN_LOCK"
	// A payment exists for an order that does not.
	ClassPaymentWithoutOrder = "PAYMENT_WITHOUT_ORDER"
	// An order is paid but no payment was captured for it.
	ClassOrderPaidWithoutPayment = "ORDER_PAID_WITHOUT_PAYMENT"
	// An order was refunded but its consumed coupon was not returned.
	ClassRefundCouponNotReturned = "REFUND_COUPON_NOT_RETURNED"
)

// Classes lists every finding class in report order.
var Classes = []string{
	ClassCouponUsedOrderNotPaid, ClassOrderPaidCouponNotUsed, ClassDiscountMismatch, ClassPaymentAmountMismatch,
	ClassCouponUsedTwice, ClassOrphanLock, ClassPaymentWithoutOrder, ClassOrderPaidWithoutPayment,
	ClassRefundCouponNotReturned,
}

// OrderStatus is an order's state in the CSV contract.
type OrderStatus uint8

// Order statuses.
const (
	OrderPending OrderStatus = iota + 1
	OrderPaid
	OrderCancelled
	OrderRefunded
)

var orderStatusNames = [...]string{"", "PENDING", "PAID", "CANCELLED", "REFUNDED"}

func (s OrderStatus) String() string {
	if int(s) < len(orderStatusNames) {
		return orderStatusNames[s]
	}
	return "UNKNOWN"
}

// PaymentStatus is a payment's state in the CSV contract.
type PaymentStatus uint8

// Payment statuses.
const (
	PaymentFrozen PaymentStatus = iota + 1
	PaymentCaptured
	PaymentReleased
	PaymentRefunded
)

var paymentStatusNames = [...]string{"", "FROZEN", "CAPTURED", "RELEASED", "REFUNDED"}

func (s PaymentStatus) String() string {
	if int(s) < len(paymentStatusNames) {
		return paymentStatusNames[s]
	}
	return "UNKNOWN"
}

// Op is a coupon ledger operation.
type Op uint8

// Ledger operations, as the coupon service writes them.
const (
	OpLock Op = iota + 1
	OpConsume
	OpRelease
	OpReturn // a used coupon given back after a refund
)

var opNames = [...]string{"", "LOCK", "CONSUME", "RELEASE", "RETURN"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "UNKNOWN"
}

func parseEnum[T ~uint8](names []string, s string) (T, bool) {
	for i := 1; i < len(names); i++ {
		if names[i] == s {
			return T(i), true
		}
	}
	return 0, false
}

// ParseOrderStatus, ParsePaymentStatus and ParseOp read the contract's names.
func ParseOrderStatus(s string) (OrderStatus, bool) {
	return parseEnum[OrderStatus](orderStatusNames[:], s)
}

// ParsePaymentStatus reads FROZEN, CAPTURED, RELEASED or REFUNDED.
func ParsePaymentStatus(s string) (PaymentStatus, bool) {
	return parseEnum[PaymentStatus](paymentStatusNames[:], s)
}

// ParseOp reads LOCK, CONSUME, RELEASE or RETURN.
func ParseOp(s string) (Op, bool) { return parseEnum[Op](opNames[:], s) }

// Order is one row of the order ledger. Times are Unix microseconds (UTC);
// money is int64 minor units.
type Order struct {
	OrderNo    string
	UserID     int64
	Status     OrderStatus
	Amount     int64
	CouponCode string
	Discount   int64
	Payable    int64
	UpdatedAt  int64
}

// Payment is one row of the payment ledger.
type Payment struct {
	PaymentID string
	OrderNo   string
	Status    PaymentStatus
	Amount    int64
	UpdatedAt int64
}

// Entry is one row of the coupon ledger.
type Entry struct {
	OrderNo    string
	CouponCode string
	Op         Op
	Discount   int64
	UserID     int64
	TemplateID int64
	GID        string
	// BranchID is the DTM branch of GID that wrote the row; the MySQL
	// source always has it, a CSV export only with an optional branch_id
	// column. Repairs need it.
	BranchID  string
	CreatedAt int64
}

// Micros converts a time to the Unix microseconds records carry.
func Micros(t time.Time) int64 { return t.UnixMicro() }

// FromMicros is the inverse of Micros, in UTC.
func FromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// Finding is one discrepancy: one object per line of discrepancies.jsonl.
type Finding struct {
	Class      string `json:"class"`
	OrderNo    string `json:"order_no"`
	CouponCode string `json:"coupon_code"`
	// AmountAtRisk is in minor units: the money lost or exposed if nobody acts.
	AmountAtRisk int64  `json:"amount_at_risk"`
	Detail       string `json:"detail"`
	// Orders lists every order involved when there are several (COUPON_USED_TWICE).
	Orders      []string `json:"orders,omitempty"`
	OrderStatus string   `json:"order_status,omitempty"`
	OrderAmount int64    `json:"order_amount,omitempty"`
	UserID      int64    `json:"user_id,omitempty"`
	// GID, BranchID and LockedAt identify an ORPHAN_LOCK's DTM branch;
	// GID and BranchID the consuming branch of a REFUND_COUPON_NOT_RETURNED.
	GID      string     `json:"gid,omitempty"`
	BranchID string     `json:"branch_id,omitempty"`
	LockedAt *time.Time `json:"locked_at,omitempty"`
	// Resolution is set when an applied repair resolved the finding
	// (reconcile_repair); such findings do not count as open.
	Resolution string `json:"resolution,omitempty"`
}

// Key identifies a finding across runs of one date, as reconcile_repair does.
type Key struct {
	Class, OrderNo, CouponCode string
}

// Key returns the finding's identity.
func (f *Finding) Key() Key { return Key{f.Class, f.OrderNo, f.CouponCode} }

// Pending is an order still in flight at as-of: not judged, written to
// pending.jsonl and carried into the next day's run with its records.
type Pending struct {
	OrderNo string `json:"order_no"`
	// Since is the first date (YYYY-MM-DD) the order was pending; after
	// PendingDays it is judged whatever its records say.
	Since string `json:"since"`
	// Latest is the time of its latest record.
	Latest time.Time `json:"latest"`
	Reason string    `json:"reason"`
	// Records are what was known of the order at as-of.
	Records PendingRecords `json:"records"`
}

// PendingRecords are a pending order's rows, in the CSV contract's terms.
type PendingRecords struct {
	Order    *OrderJSON    `json:"order,omitempty"`
	Payments []PaymentJSON `json:"payments,omitempty"`
	Ledger   []EntryJSON   `json:"ledger,omitempty"`
}

// OrderJSON is an order row as JSON.
type OrderJSON struct {
	OrderNo        string    `json:"order_no"`
	UserID         int64     `json:"user_id"`
	Status         string    `json:"status"`
	Amount         int64     `json:"amount"`
	CouponCode     string    `json:"coupon_code"`
	DiscountAmount int64     `json:"discount_amount"`
	PayableAmount  int64     `json:"payable_amount"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// PaymentJSON is a payment row as JSON.
type PaymentJSON struct {
	PaymentID string    `json:"payment_id"`
	OrderNo   string    `json:"order_no"`
	Status    string    `json:"status"`
	Amount    int64     `json:"amount"`
	UpdatedAt time.Time `json:"updated_at"`
}

// EntryJSON is a coupon ledger row as JSON.
type EntryJSON struct {
	OrderNo        string    `json:"order_no"`
	CouponCode     string    `json:"coupon_code"`
	Op             string    `json:"op"`
	DiscountAmount int64     `json:"discount_amount"`
	UserID         int64     `json:"user_id"`
	TemplateID     int64     `json:"template_id"`
	GID            string    `json:"gid"`
	BranchID       string    `json:"branch_id,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
}

func orderJSON(o *Order) *OrderJSON {
	return &OrderJSON{o.OrderNo, o.UserID, o.Status.String(), o.Amount, o.CouponCode, o.Discount, o.Payable, FromMicros(o.UpdatedAt)}
}

func paymentJSON(p *Payment) PaymentJSON {
	return PaymentJSON{p.PaymentID, p.OrderNo, p.Status.String(), p.Amount, FromMicros(p.UpdatedAt)}
}

func entryJSON(e *Entry) EntryJSON {
	return EntryJSON{e.OrderNo, e.CouponCode, e.Op.String(), e.Discount, e.UserID, e.TemplateID, e.GID, e.BranchID, FromMicros(e.CreatedAt)}
}

// records turns pending JSON back into records; unknown statuses were
// checked when the JSON was read.
func (r *PendingRecords) records() (*Order, []Payment, []Entry) {
	var o *Order
	if j := r.Order; j != nil {
		st, _ := ParseOrderStatus(j.Status)
		o = &Order{j.OrderNo, j.UserID, st, j.Amount, j.CouponCode, j.DiscountAmount, j.PayableAmount, Micros(j.UpdatedAt)}
	}
	ps := make([]Payment, len(r.Payments))
	for i, j := range r.Payments {
		st, _ := ParsePaymentStatus(j.Status)
		ps[i] = Payment{j.PaymentID, j.OrderNo, st, j.Amount, Micros(j.UpdatedAt)}
	}
	es := make([]Entry, len(r.Ledger))
	for i, j := range r.Ledger {
		op, _ := ParseOp(j.Op)
		es[i] = Entry{j.OrderNo, j.CouponCode, op, j.DiscountAmount, j.UserID, j.TemplateID, j.GID, j.BranchID, Micros(j.CreatedAt)}
	}
	return o, ps, es
}
