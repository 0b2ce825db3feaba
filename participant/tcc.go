package participant

import (
	"context"
	"time"
)

// A coupon lock belongs to the DTM global transaction that took it: the
// coupon row records the gid (and branch) with the lock, written with the
// barrier in one local transaction. Only that transaction's Confirm can use
// the coupon and only its Cancel can give it back, so two transactions for
// one order (an order service retrying under a new gid, or a forged branch
// call) can never make one coupon discount two payments or free a coupon
// another transaction has paid with.
//
// Compensation never refuses: DTM retries any answer but OK with a
// doubling, uncapped backoff and stops at the first failing branch, so
// Confirm and Cancel answer OK for anything that cannot name a lock of
// their transaction, and Unavailable only for transient faults.

// Ledger operations, one ledger row each, written with the coupon change.
const (
	OpLock    = "LOCK"
	OpConsume = "CONSUME"
	OpRelease = "RELEASE"
	OpReturn  = "RETURN"
)

// Branch identifies one call of a DTM branch; the store writes DTM's
// barrier for it in the same local transaction as the coupon change, which
// makes duplicates, null compensation and hanging Try calls harmless.
type Branch struct {
	TransType string
	GID       string
	BranchID  string
	Op        string
}

// DailyLimit caps coupon uses per user per UTC day, for one template or,
// with TemplateID 0, across all templates (the risk rule). Limit 0 counts
// without a cap.
type DailyLimit struct {
	TemplateID int64
	Limit      int32
}

// Change is what a branch decided to do to a coupon. The store writes it,
// the daily-use counts and one ledger row per op in the branch's
// transaction.
type Change struct {
	Status   CouponStatus
	OrderNo  string
	Discount int64
	// GID and BranchID name the transaction holding the coupon while
	// LOCKED and the one that used it once USED; empty otherwise.
	GID, BranchID string
	// LockedAt and UsedAt are written as they are; zero clears them.
	LockedAt, UsedAt time.Time
	// Ledger are the ledger rows to append, in order.
	Ledger []Entry
	// CountUse counts one use against each of these limits on At's UTC
	// day; a count past its limit refuses the change with
	// DAILY_USE_LIMIT_REACHED.
	CountUse []DailyLimit
	// GiveBackUse gives back the use counted on the UTC day the coupon was
	// locked.
	GiveBackUse bool
	// Return, when set, records the return of a used coupon; a request ID
	// recorded before fails the change with ErrDuplicateRequest.
	Return *ReturnRecord
	At     time.Time
}

// Entry is one ledger row of a change: what happened to the coupon for
// which order, with which discount.
type Entry struct {
	Op       string
	OrderNo  string
	Discount int64
}

// BranchRequest is the one payload of Try, Confirm and Cancel.
type BranchRequest struct {
	UserID int64
	Code   string
	Order  Order
}

// BranchResult reports a branch's outcome.
type BranchResult struct {
	Coupon   *Coupon
	Discount int64
	Payable  int64
}

func refuse(reason, format string, args ...any) error {
	return Errorf(EABORTED, reason, format, args...)
}

// aborted turns a Try's input refusal into Aborted, DTM's FAILURE, so that
// every transaction mode rolls back instead of retrying it; reason and
// field stay.
func aborted(err error) error {
	e, ok := err.(*Error)
	if !ok || e.Code != EINVALID {
		return err
	}
	cp := *e
	cp.Code = EABORTED
	return &cp
}

// holds reports whether the coupon is locked by br's transaction for
// orderNo. Locks written before the lock recorded its gid match by order.
func holds(c *Coupon, br Branch, orderNo string) bool {
	if c.Status != CouponLocked || c.OrderNo != orderNo {
		return false
	}
	return c.LockGID == br.GID || c.LockGID == ""
}

// Lock is the TCC Try: it locks the coupon for the order and its global
// transaction after checking ownership, status, expiry, the template's
// rules and the daily limits, and returns the discount. Every refusal is
// EABORTED so DTM rolls back, input refusals included.
func (s *Service) Lock(ctx context.Context, br Branch, r BranchRequest) (BranchResult, error) {
	return s.reserve(ctx, br, r, CouponLocked)
}

// reserve is a Try (final LOCKED) or a Saga action (final USED): the same
// checks, in the same local transaction, ending in a different status.
func (s *Service) reserve(ctx context.Context, br Branch, r BranchRequest, final CouponStatus) (BranchResult, error) {
	if err := br.validate(); err != nil {
		return BranchResult{}, err
	}
	if err := br.fits(); err != nil {
		return BranchResult{}, aborted(err)
	}
	if err := r.validate(); err != nil {
		return BranchResult{}, aborted(err)
	}
	now := s.now().UTC()
	out, err := s.branches.Apply(ctx, br, r.UserID, r.Code, func(c *Coupon) (*Change, error) {
		return s.decideReserve(ctx, br, c, r, now, final)
	})
	if ErrorCode(err) == ENOTFOUND {
		// Another user's coupon and no coupon at all get one answer,
		// after the same queries.
		return BranchResult{}, couponNotFound(EABORTED, r.Code)
	}
	if err != nil {
		return BranchResult{}, err
	}
	c := out.Coupon
	if out.Changed {
		s.counts.locks.Add(1)
		if final == CouponUsed {
			s.counts.consumes.Add(1)
		}
	} else if out.Skipped {
		// A duplicate, or one that arrived after its Cancel or
		// compensation (hanging): OK only if its transaction holds the
		// coupon for this order, and only with the discount this order
		// gets.
		if err := s.checkHeld(ctx, br, c, r, now, final); err != nil {
			return BranchResult{}, err
		}
	}
	return BranchResult{Coupon: c, Discount: c.DiscountAmount, Payable: r.Order.Amount - c.DiscountAmount}, nil
}

// decideReserve decides a Try (final LOCKED) or a Saga action (final
// USED) on the locked coupon row.
func (s *Service) decideReserve(ctx context.Context, br Branch, c *Coupon, r BranchRequest, now time.Time, final CouponStatus) (*Change, error) {
	if c.Status == final {
		// Another branch of the same transaction reserved it for this
		// order: nothing to write, once this order's checks agree.
		return nil, s.checkHeld(ctx, br, c, r, now, final)
	}
	if c.Status == CouponAvailable && !now.Before(c.ExpireAt) || c.Status == CouponExpired {
		return nil, refuse(ReasonCouponExpired, "coupon %s expired at %s", c.Code, c.ExpireAt.Format(time.RFC3339))
	}
	if c.Status != CouponAvailable {
		return nil, refuse(ReasonCouponNotAvailable, "coupon %s is %s", c.Code, c.Status)
	}
	t, d, err := s.quote(ctx, c, r.Order, now)
	if err != nil {
		return nil, err
	}
	// Both counts are always kept, so Cancel gives back exactly what Try
	// took even if a limit changes in between; limit 0 counts without capping.
	ch := &Change{
		Status: CouponLocked, OrderNo: r.Order.OrderNo, Discount: d, GID: br.GID, BranchID: br.BranchID,
		LockedAt: now, Ledger: []Entry{{OpLock, r.Order.OrderNo, d}}, At: now,
		CountUse: []DailyLimit{
			{TemplateID: t.ID, Limit: max(t.DailyUseLimit, 0)},
			{TemplateID: 0, Limit: max(s.cfg.MaxDailyUses, 0)},
		},
	}
	if final == CouponUsed {
		// A Saga action locks and uses in one step: both ledger rows, so
		// reconcile reads it like a TCC Try and Confirm.
		ch.Status, ch.UsedAt = CouponUsed, now
		ch.Ledger = append(ch.Ledger, Entry{OpConsume, r.Order.OrderNo, d})
	}
	return ch, nil
}

// checkHeld accepts a Try (or a Saga action) that finds the coupon already
// reserved only if its own transaction holds it (LOCKED, or USED for a
// saga) for this order and this order's checks give the reserved discount.
func (s *Service) checkHeld(ctx context.Context, br Branch, c *Coupon, r BranchRequest, now time.Time, held CouponStatus) error {
	if c.Status != held || c.LockGID != br.GID || c.OrderNo != r.Order.OrderNo {
		return refuse(ReasonCouponNotAvailable, "coupon %s is not %s by transaction %s for order %s", c.Code, held, br.GID, r.Order.OrderNo)
	}
	_, d, err := s.quote(ctx, c, r.Order, now)
	if err != nil {
		return err
	}
	if d != c.DiscountAmount {
		return refuse(ReasonCouponNotAvailable, "coupon %s is locked with discount %d; this order would get %d", c.Code, c.DiscountAmount, d)
	}
	return nil
}

// quote checks the coupon's template against the order and returns the
// discount it gives, refusing (EABORTED) when it gives none.
func (s *Service) quote(ctx context.Context, c *Coupon, o Order, now time.Time) (*Template, int64, error) {
	t, _, err := s.templates.Get(ctx, c.TemplateID)
	if err != nil {
		return nil, 0, err
	}
	if now.Before(t.ValidFrom) {
		return nil, 0, refuse(ReasonRuleNotMet, "coupon %s is not valid before %s", c.Code, t.ValidFrom.Format(time.RFC3339))
	}
	eligible, err := s.checkRules(t, o)
	if err != nil {
		return nil, 0, err
	}
	d := t.Discount(eligible)
	if d <= 0 {
		return nil, 0, refuse(ReasonRuleNotMet, "coupon %s gives no discount on this order", c.Code)
	}
	return t, d, nil
}

// Consume is the TCC Confirm: the coupon locked by its transaction for the
// order becomes USED. It never refuses. A Confirm that finds no lock of its
// transaction changes nothing and answers OK — DTM has already committed,
// so refusing would only wedge the transaction — but it means the order
// may be paid without its coupon: it is logged at error and counted for
// alerting, and reconcile reports the order.
func (s *Service) Consume(ctx context.Context, br Branch, r BranchRequest) (BranchResult, error) {
	if err := br.validate(); err != nil {
		return BranchResult{}, err
	}
	if !r.names() || br.fits() != nil {
		s.confirmWithoutLock(ctx, br, r, "the payload names no coupon its transaction could have locked")
		return BranchResult{}, nil
	}
	now := s.now().UTC()
	noLock := ""
	out, err := s.branches.Apply(ctx, br, r.UserID, r.Code, func(c *Coupon) (*Change, error) {
		switch {
		case holds(c, br, r.Order.OrderNo):
			return &Change{
				Status: CouponUsed, OrderNo: c.OrderNo, Discount: c.DiscountAmount, GID: br.GID, BranchID: br.BranchID,
				LockedAt: c.LockedAt, UsedAt: now, Ledger: []Entry{{OpConsume, c.OrderNo, c.DiscountAmount}}, At: now,
			}, nil
		case c.Status == CouponUsed && c.LockGID == br.GID && c.OrderNo == r.Order.OrderNo:
			return nil, nil // another branch of this transaction used it
		}
		noLock = "coupon is " + c.Status.String() + " for order " + c.OrderNo + " of transaction " + c.LockGID
		return nil, nil
	})
	if ErrorCode(err) == ENOTFOUND {
		s.confirmWithoutLock(ctx, br, r, "the user holds no such coupon")
		return BranchResult{}, nil
	}
	if err != nil {
		return BranchResult{}, transient("consume coupon", err)
	}
	if noLock != "" {
		s.confirmWithoutLock(ctx, br, r, noLock)
	}
	if out.Changed {
		s.counts.consumes.Add(1)
	}
	return s.branchResult(out.Coupon, r), nil
}

func (s *Service) confirmWithoutLock(ctx context.Context, br Branch, r BranchRequest, why string) {
	s.counts.confirmWithoutLock.Add(1)
	s.log.ErrorContext(ctx, "confirm found no lock of its transaction; the order may be paid without its coupon",
		"gid", br.GID, "branch_id", br.BranchID, "order_no", r.Order.OrderNo, "user_id", r.UserID, "code", r.Code, "why", why)
}

// Unlock is the TCC Cancel: the coupon locked by its transaction for the
// order goes back to AVAILABLE (EXPIRED when past expiry) and the daily
// uses it counted are given back. A lock of another transaction is left
// alone; it never refuses.
func (s *Service) Unlock(ctx context.Context, br Branch, r BranchRequest) (BranchResult, error) {
	if err := br.validate(); err != nil {
		return BranchResult{}, err
	}
	if !r.names() || br.fits() != nil {
		s.log.WarnContext(ctx, "cancel of a payload that names no coupon its transaction could have locked", "gid", br.GID, "order_no", r.Order.OrderNo)
		return BranchResult{}, nil
	}
	now := s.now().UTC()
	out, err := s.branches.Apply(ctx, br, r.UserID, r.Code, func(c *Coupon) (*Change, error) {
		if !holds(c, br, r.Order.OrderNo) {
			s.log.WarnContext(ctx, "cancel found no lock of its transaction; nothing to release",
				"gid", br.GID, "order_no", r.Order.OrderNo, "code", c.Code, "status", c.Status.String(), "holder", c.LockGID)
			return nil, nil
		}
		return releaseChange(c, now), nil
	})
	if ErrorCode(err) == ENOTFOUND {
		s.log.WarnContext(ctx, "cancel of an unknown coupon", "gid", br.GID, "code", r.Code, "user_id", r.UserID, "order_no", r.Order.OrderNo)
		return BranchResult{}, nil
	}
	if err != nil {
		return BranchResult{}, transient("unlock coupon", err)
	}
	if out.Changed {
		s.counts.releases.Add(1)
	}
	return s.branchResult(out.Coupon, r), nil
}

// releaseChange gives a locked coupon back: AVAILABLE, or EXPIRED when
// past its expiry, with the daily use it counted.
func releaseChange(c *Coupon, now time.Time) *Change {
	next := CouponAvailable
	if !now.Before(c.ExpireAt) {
		next = CouponExpired
	}
	return &Change{Status: next, Ledger: []Entry{{OpRelease, c.OrderNo, c.DiscountAmount}}, GiveBackUse: true, At: now}
}

// transient makes any failure of a compensation Unavailable: DTM must
// retry it, never give up on it.
func transient(what string, err error) error {
	if ErrorCode(err) == EUNAVAILABLE {
		return err
	}
	return Unavailable(what, err)
}

func (s *Service) branchResult(c *Coupon, r BranchRequest) BranchResult {
	c.Status = c.EffectiveStatus(s.now())
	return BranchResult{Coupon: c, Discount: c.DiscountAmount, Payable: r.Order.Amount - c.DiscountAmount}
}
