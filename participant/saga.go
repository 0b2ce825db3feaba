package participant

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Saga branches. DTM's guide recommends a saga for order + stock + coupon
// flows: UseCoupon is the coupon's action and UseCouponRevert its
// compensation. Like the TCC branches they run behind the barrier on the
// user's shard, and the use belongs to its global transaction.

// Use is the Saga action: it checks exactly as Lock does and marks the
// coupon USED by the order and its transaction in one local transaction
// (ledger LOCK then CONSUME, so reconcile reads it like a TCC Try and
// Confirm). Every refusal is EABORTED, DTM's FAILURE, so DTM compensates
// the branches before it.
func (s *Service) Use(ctx context.Context, br Branch, r BranchRequest) (BranchResult, error) {
	return s.reserve(ctx, br, r, CouponUsed)
}

// Revert is the Saga compensation: it gives back only a use made by its own
// transaction for the order (AVAILABLE, or EXPIRED past expiry, with the
// day's uses; ledger RELEASE). Anything else is OK with nothing changed: a
// compensation never refuses.
func (s *Service) Revert(ctx context.Context, br Branch, r BranchRequest) (BranchResult, error) {
	if err := br.validate(); err != nil {
		return BranchResult{}, err
	}
	if !r.names() || br.fits() != nil {
		s.log.WarnContext(ctx, "revert of a payload that names no coupon its transaction could have used", "gid", br.GID, "order_no", r.Order.OrderNo)
		return BranchResult{}, nil
	}
	now := s.now().UTC()
	out, err := s.branches.Apply(ctx, br, r.UserID, r.Code, func(c *Coupon) (*Change, error) {
		if c.Status != CouponUsed || c.LockGID != br.GID || c.OrderNo != r.Order.OrderNo {
			s.log.WarnContext(ctx, "revert found no use by its transaction; nothing to give back",
				"gid", br.GID, "order_no", r.Order.OrderNo, "code", c.Code, "status", c.Status.String(), "holder", c.LockGID)
			return nil, nil
		}
		return releaseChange(c, now), nil
	})
	if ErrorCode(err) == ENOTFOUND {
		s.log.WarnContext(ctx, "revert of an unknown coupon", "gid", br.GID, "code", r.Code, "user_id", r.UserID)
		return BranchResult{}, nil
	}
	if err != nil {
		return BranchResult{}, transient("revert coupon use", err)
	}
	if out.Changed {
		s.counts.releases.Add(1)
	}
	return s.branchResult(out.Coupon, r), nil
}

// ReturnRecord is the idempotency record of a coupon return.
type ReturnRecord struct {
	RequestID string
	CouponID  int64
	UserID    int64
	OrderNo   string
	Reason    string
	CreatedAt time.Time
}

// ReturnRequest gives a used coupon back after its order was refunded.
type ReturnRequest struct {
	RequestID string
	UserID    int64
	Code      string
	OrderNo   string
	Reason    string
}

// ReturnResult is what ReturnCoupon did.
type ReturnResult struct {
	Coupon   *Coupon
	Replayed bool // the request ID had returned the coupon before
}

// Return gives back a coupon USED by the refunded order: AVAILABLE again,
// or EXPIRED past its expiry, with a ledger RETURN row and the return's
// record, in one local transaction (behind the barrier when br names a DTM
// branch). It is idempotent on the request ID. The day's use is not given
// back: the coupon was used that day, and a refund must not reopen the
// daily and risk limits (buy, refund, buy again).
//
// A coupon still LOCKED for the refunded order is waited for: the order's
// Confirm of the coupon may not have run yet (DTM confirms in reverse
// order of registration, so the order can be PAID, then refunded, while
// ConsumeCoupon is still being retried). Return answers EREFUSED with
// COUPON_LOCKED_PENDING_CONFIRM — FailedPrecondition, DTM's ONGOING, so the
// message branch is retried at a fixed interval — and the refusal rolls
// its barrier row back with it, so the retry is not a duplicate. Once the
// lock is consumed the retry returns the coupon; once it is released
// there is nothing to return. A coupon LOCKED for another order is not
// this order's to wait for: this order's lock was settled before that one
// was taken (a coupon has one lock at a time), so nothing of this order
// will come back by waiting.
//
// A coupon that cannot come back — not used by that order, or of a
// template that is not returnable — is refused with COUPON_NOT_RETURNABLE
// when called directly, and one the user does not hold with
// COUPON_NOT_FOUND. Called as a DTM branch (a 2-phase message's, which
// must complete) it answers OK with nothing changed instead, and logs why.
//
// Replayed is true only when this request ID did return the coupon; a
// branch the barrier skips reports the coupon as it stands.
func (s *Service) Return(ctx context.Context, br Branch, r ReturnRequest) (ReturnResult, error) {
	asBranch := br.Op != ""
	if asBranch {
		if err := br.validate(); err != nil {
			return ReturnResult{}, err
		}
	}
	if err := r.validate(); err != nil {
		if asBranch {
			s.log.WarnContext(ctx, "return branch with a malformed payload; nothing to return", "gid", br.GID, "err", err)
			return ReturnResult{}, nil
		}
		return ReturnResult{}, err
	}
	cannot := func(c *Coupon, format string, args ...any) (ReturnResult, error) {
		if asBranch {
			s.log.WarnContext(ctx, "return branch: nothing to return", "gid", br.GID, "order_no", r.OrderNo, "code", r.Code,
				"why", Errorf(EREFUSED, "", format, args...).Message)
			return ReturnResult{Coupon: c}, nil
		}
		return ReturnResult{}, Errorf(EREFUSED, ReasonCouponNotReturnable, format, args...)
	}
	replay := func() (ReturnResult, bool, error) {
		rec, err := s.branches.ReturnRecord(ctx, r.UserID, r.RequestID)
		if err != nil || rec == nil {
			return ReturnResult{}, false, err
		}
		c, err := s.coupons.ByCode(ctx, r.UserID, r.Code)
		if ErrorCode(err) == ENOTFOUND || err == nil && (c.ID != rec.CouponID || rec.OrderNo != r.OrderNo) {
			if asBranch {
				s.log.ErrorContext(ctx, "return branch reuses another return's request_id", "gid", br.GID, "request_id", r.RequestID)
				return ReturnResult{}, true, nil
			}
			return ReturnResult{}, true, requestConflict(r.RequestID)
		}
		if err != nil {
			return ReturnResult{}, true, err
		}
		c.Status = c.EffectiveStatus(s.now())
		return ReturnResult{Coupon: c, Replayed: true}, true, nil
	}
	if res, done, err := replay(); done || err != nil {
		return res, err
	}
	now := s.now().UTC()
	why := ""
	out, err := s.branches.Apply(ctx, br, r.UserID, r.Code, func(c *Coupon) (*Change, error) {
		if c.Status == CouponLocked && c.OrderNo == r.OrderNo {
			return nil, Errorf(EREFUSED, ReasonCouponLockedPendingConfirm,
				"coupon %s is locked by transaction %s for order %s: its Confirm has not run yet; retry", c.Code, c.LockGID, r.OrderNo)
		}
		if c.Status != CouponUsed || c.OrderNo != r.OrderNo {
			why = "coupon " + c.Code + " is " + c.Status.String() + ", not used by order " + r.OrderNo
			return nil, nil
		}
		t, _, err := s.templates.Get(ctx, c.TemplateID)
		if err != nil {
			return nil, err
		}
		if !t.Returnable {
			why = "template " + t.Name + " does not return its coupons"
			return nil, nil
		}
		next := CouponAvailable
		if !now.Before(c.ExpireAt) {
			next = CouponExpired
		}
		return &Change{
			Status: next, Ledger: []Entry{{OpReturn, c.OrderNo, c.DiscountAmount}}, At: now,
			Return: &ReturnRecord{RequestID: r.RequestID, OrderNo: r.OrderNo, Reason: strings.TrimSpace(r.Reason)},
		}, nil
	})
	switch {
	case errors.Is(err, ErrDuplicateRequest):
		// The same request ID returned it just now (a concurrent retry).
		if res, done, err := replay(); done || err != nil {
			return res, err
		}
		return ReturnResult{}, Unavailable("return coupon", err)
	case ErrorCode(err) == ENOTFOUND:
		if asBranch {
			return cannot(nil, "coupon %s is not the user's", r.Code)
		}
		return ReturnResult{}, couponNotFound(ENOTFOUND, r.Code)
	case ErrorReason(err) == ReasonCouponLockedPendingConfirm:
		s.log.InfoContext(ctx, "return waits for the coupon's Confirm", "gid", br.GID, "order_no", r.OrderNo, "code", r.Code, "err", err)
		return ReturnResult{}, err
	case err != nil:
		if asBranch {
			return ReturnResult{}, transient("return coupon", err)
		}
		return ReturnResult{}, err
	}
	c := out.Coupon
	c.Status = c.EffectiveStatus(s.now())
	if out.Skipped {
		// The barrier saw this branch before. It returned the coupon only
		// if its request ID has a return record (written with that
		// barrier row); otherwise that call returned nothing.
		if res, done, err := replay(); done || err != nil {
			return res, err
		}
		s.log.WarnContext(ctx, "return branch seen before returned nothing", "gid", br.GID, "order_no", r.OrderNo, "code", c.Code, "status", c.Status.String())
		return ReturnResult{Coupon: c}, nil
	}
	if why != "" {
		return cannot(c, "%s", why)
	}
	s.log.InfoContext(ctx, "coupon returned", "code", c.Code, "order_no", r.OrderNo, "user_id", r.UserID, "request_id", r.RequestID)
	return ReturnResult{Coupon: c}, nil
}
