// Package shape checks the shape of what the coupon service accepts —
// coupon codes, idempotency keys and orders — and holds the bounds it puts
// on them. It has no dependencies, so that clients (client/coupontcc) run
// the very checks the service runs and never register a branch the service
// would refuse for its shape.
package shape

import (
	"fmt"
	"unicode/utf8"
)

// Bounds on input.
const (
	// MaxAmount bounds an order's amount and every money field, in minor
	// units: 10^18 leaves headroom below int64's 9.2×10^18 for sums.
	MaxAmount = 1_000_000_000_000_000
	// MaxItems bounds an order's lines; rules and eligible amounts are
	// evaluated over every line.
	MaxItems          = 200
	MaxKeyLen         = 64 // request_id, order_no
	MaxSKULen         = 64
	MaxProductLineLen = 64
	MaxQuantity       = 1_000_000_000
	// CodeLen is the length of a coupon code: its ID and a 64-bit random
	// tag. LegacyCodeLen is the length of codes minted before the tag,
	// which stay valid.
	CodeLen       = 26
	LegacyCodeLen = 16
)

// FieldError names the offending field of a request and what is wrong.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Code reports whether s has the shape of a coupon code: 26 (or, minted
// before codes carried a 64-bit tag, 16) characters of Crockford base32
// (digits and upper-case letters but I, L, O and U).
func Code(s string) bool {
	if len(s) != CodeLen && len(s) != LegacyCodeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') || c == 'I' || c == 'L' || c == 'O' || c == 'U' {
			return false
		}
	}
	return true
}

// Key checks an idempotency key or order number: 1 to 64 printable ASCII
// bytes without spaces.
func Key(field, v string) *FieldError {
	if v == "" {
		return fieldErr(field, "is required")
	}
	if len(v) > MaxKeyLen {
		return fieldErr(field, "is longer than %d bytes", MaxKeyLen)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return fieldErr(field, "must be printable ASCII without spaces")
		}
	}
	return nil
}

// Item is one line of an order.
type Item struct {
	SKU         string
	ProductLine string
	Quantity    int64
	// Amount is the line's amount (price × quantity) in minor units.
	Amount int64
}

// Order is what a coupon is applied to.
type Order struct {
	OrderNo     string
	UserID      int64
	Amount      int64
	Currency    string
	ProductLine string
	Items       []Item
}

// CheckOrder checks an order's shape for userID (its owner, > 0). The
// line amounts must not add up to more than the order's amount (an order
// may carry shipping or fees on top of its lines, never less than them).
func CheckOrder(userID int64, o Order) *FieldError {
	if err := Key("order.order_no", o.OrderNo); err != nil {
		return err
	}
	if o.UserID != 0 && o.UserID != userID {
		return fieldErr("order.user_id", "does not match user_id")
	}
	if o.Amount <= 0 || o.Amount > MaxAmount {
		return fieldErr("order.amount", "must be in 1..%d minor units", int64(MaxAmount))
	}
	if o.Currency != "" && !currency(o.Currency) {
		return fieldErr("order.currency", "must be an ISO 4217 code such as CNY")
	}
	if err := text("order.product_line", o.ProductLine, MaxProductLineLen); err != nil {
		return err
	}
	if len(o.Items) > MaxItems {
		return fieldErr("order.items", "has more than %d lines", MaxItems)
	}
	var sum int64
	for i, it := range o.Items {
		f := fmt.Sprintf("order.items[%d]", i)
		if err := text(f+".sku", it.SKU, MaxSKULen); err != nil {
			return err
		}
		if err := text(f+".product_line", it.ProductLine, MaxProductLineLen); err != nil {
			return err
		}
		if it.Quantity < 0 || it.Quantity > MaxQuantity {
			return fieldErr(f+".quantity", "must be in 0..%d", MaxQuantity)
		}
		if it.Amount < 0 || it.Amount > MaxAmount {
			return fieldErr(f+".amount", "must be in 0..%d minor units", int64(MaxAmount))
		}
		// sum ≤ o.Amount ≤ MaxAmount before the addition, so it cannot overflow.
		if sum += it.Amount; sum > o.Amount {
			return fieldErr("order.items", "line amounts add up to more than order.amount %d", o.Amount)
		}
	}
	return nil
}

func currency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

func text(field, v string, maxLen int) *FieldError {
	if len(v) > maxLen {
		return fieldErr(field, "is longer than %d bytes", maxLen)
	}
	if !utf8.ValidString(v) {
		return fieldErr(field, "is not valid UTF-8")
	}
	return nil
}
