package explore_test

import (
	"fmt"
	"strings"

	"github.com/opencoupon/coupon/participant"
)

// The checks run after every complete schedule. Their names are what a
// failing run reports, and what TestExplorerCatchesBrokenBuilds looks for.
const (
	// CheckOneUse: the coupon discounts at most one committed, unrefunded
	// payment, and is USED by exactly that one (if any) — not by an order
	// that never committed.
	CheckOneUse = "one-committed-use"
	// CheckRefundReturns: a refunded order's coupon ends returned: not
	// held by the refunded transaction, with a RETURN row for the order.
	CheckRefundReturns = "refund-returns-coupon"
	// CheckNoFinishedLock: no lock is held by a transaction DTM finished.
	CheckNoFinishedLock = "no-lock-of-finished-transaction"
	// CheckLedger: the ledger rows, replayed, give the coupon's state, and
	// every row is a move the coupon could make.
	CheckLedger = "ledger-matches-coupon"
	// CheckDailyOnce: every reservation not given back is counted once in
	// the day's use counts, the template's and the all-templates one.
	CheckDailyOnce = "daily-use-counted-once"
	// CheckFinishes: every transaction DTM started has finished when the
	// schedule (and its drain) ends.
	CheckFinishes = "transactions-finish"
	// CheckAnswers: Confirm, Cancel, Revert and a message's Return answer
	// only OK, FailedPrecondition (ONGOING) or Unavailable.
	CheckAnswers = "compensation-answers"
)

// ledgerRow is one coupon_ledger row of the coupon.
type ledgerRow struct {
	Op, OrderNo, GID string
	Discount         int64
}

// snapshot is the coupon as the database holds it after a schedule.
type snapshot struct {
	Status   participant.CouponStatus
	OrderNo  string
	GID      string
	Discount int64
	Ledger   []ledgerRow
	// DailyTemplate and DailyAll are the user's day counts for the
	// coupon's template and across templates (template 0).
	DailyTemplate, DailyAll int64
}

// txnView is what the model of DTM knows of one transaction.
type txnView struct {
	Name, GID, OrderNo string
	Started            bool
	// Reserved: its Try (or Use) answered OK, so its payment got the
	// coupon's discount if it committed.
	Reserved  bool
	Committed bool
	// Refunded: its payment was refunded and a Return sent for its order.
	Refunded bool
	Finished bool
}

// violation is a failed check with what the checker saw.
type violation struct {
	Check, Detail string
}

func (v violation) String() string { return v.Check + ": " + v.Detail }

// check is the one checker over a complete schedule: the coupon row, its
// ledger and day counts against the model's view of the transactions.
func check(s snapshot, txns []txnView) []violation {
	var out []violation
	fail := func(check, format string, args ...any) {
		out = append(out, violation{check, fmt.Sprintf(format, args...)})
	}
	byGID := map[string]txnView{}
	for _, t := range txns {
		if t.Started {
			byGID[t.GID] = t
		}
	}
	held := s.Status == participant.CouponLocked || s.Status == participant.CouponUsed

	// A coupon is used by at most one committed order.
	var live []txnView
	for _, t := range txns {
		if t.Committed && t.Reserved && !t.Refunded {
			live = append(live, t)
		}
	}
	switch {
	case len(live) > 1:
		fail(CheckOneUse, "%d committed payments got the coupon's discount: %s", len(live), names(live))
	case len(live) == 1 && (s.Status != participant.CouponUsed || s.GID != live[0].GID || s.OrderNo != live[0].OrderNo):
		fail(CheckOneUse, "%s committed with the coupon's discount but the coupon is %s by %q for order %q", live[0].Name, s.Status, s.GID, s.OrderNo)
	case s.Status == participant.CouponUsed:
		t, ok := byGID[s.GID]
		if !ok || !t.Committed {
			fail(CheckOneUse, "the coupon is USED by %q (order %q), a transaction that did not commit", nameOf(t, s.GID), s.OrderNo)
		}
	}

	// A refunded order's coupon ends returned.
	for _, t := range txns {
		if !t.Refunded {
			continue
		}
		if held && s.GID == t.GID {
			fail(CheckRefundReturns, "order %s of %s was refunded but the coupon is %s by it", t.OrderNo, t.Name, s.Status)
		} else if !hasOp(s.Ledger, participant.OpReturn, t.OrderNo) {
			fail(CheckRefundReturns, "order %s of %s was refunded but the ledger has no RETURN for it", t.OrderNo, t.Name)
		}
	}

	// No lock is held by a finished transaction.
	if s.Status == participant.CouponLocked {
		if t, ok := byGID[s.GID]; !ok || t.Finished {
			fail(CheckNoFinishedLock, "the coupon is LOCKED by %q for order %q, which DTM has finished", nameOf(t, s.GID), s.OrderNo)
		}
	}

	// Ledger rows agree with the coupon's state.
	if why := replay(s); why != "" {
		fail(CheckLedger, "%s", why)
	}

	// Daily use counted once.
	want := int64(0)
	for _, r := range s.Ledger {
		switch r.Op {
		case participant.OpLock:
			want++
		case participant.OpRelease:
			want--
		}
	}
	if s.DailyTemplate != want || s.DailyAll != want {
		fail(CheckDailyOnce, "the ledger has %d reservations not given back; the day counts say %d (template) and %d (all)", want, s.DailyTemplate, s.DailyAll)
	}

	for _, t := range txns {
		if t.Started && !t.Finished {
			fail(CheckFinishes, "%s never finished", t.Name)
		}
	}
	return out
}

// replay walks the ledger from a fresh AVAILABLE coupon and reports the
// first row the coupon could not have made, or a final state that differs
// from the row's; "" when they agree.
func replay(s snapshot) string {
	st, order, gid, disc := participant.CouponAvailable, "", "", int64(0)
	for i, r := range s.Ledger {
		bad := func(what string) string {
			return fmt.Sprintf("ledger row %d (%s order %q gid %q) %s; coupon was %s by %q for %q", i+1, r.Op, r.OrderNo, r.GID, what, st, gid, order)
		}
		switch r.Op {
		case participant.OpLock:
			if st != participant.CouponAvailable {
				return bad("locks a coupon that is not available")
			}
			st, order, gid, disc = participant.CouponLocked, r.OrderNo, r.GID, r.Discount
		case participant.OpConsume:
			if st != participant.CouponLocked || r.GID != gid || r.OrderNo != order || r.Discount != disc {
				return bad("consumes a lock it does not hold")
			}
			st = participant.CouponUsed
		case participant.OpRelease:
			if st != participant.CouponLocked && st != participant.CouponUsed || r.GID != gid || r.OrderNo != order {
				return bad("releases a reservation it does not hold")
			}
			st, order, gid, disc = participant.CouponAvailable, "", "", 0
		case participant.OpReturn:
			if st != participant.CouponUsed || r.OrderNo != order {
				return bad("returns a coupon its order did not use")
			}
			st, order, gid, disc = participant.CouponAvailable, "", "", 0
		default:
			return bad("has an unknown op")
		}
	}
	if st != s.Status || order != s.OrderNo || gid != s.GID || disc != s.Discount {
		return fmt.Sprintf("the ledger leaves the coupon %s by %q for %q with discount %d; the row says %s by %q for %q with discount %d",
			st, gid, order, disc, s.Status, s.GID, s.OrderNo, s.Discount)
	}
	return ""
}

func hasOp(ledger []ledgerRow, op, orderNo string) bool {
	for _, r := range ledger {
		if r.Op == op && r.OrderNo == orderNo {
			return true
		}
	}
	return false
}

func names(ts []txnView) string {
	var n []string
	for _, t := range ts {
		n = append(n, t.Name)
	}
	return strings.Join(n, ", ")
}

func nameOf(t txnView, gid string) string {
	if t.Name != "" {
		return t.Name
	}
	return gid
}
