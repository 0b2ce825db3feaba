package participant

import (
	"context"
	"strconv"
	"time"
)

// LedgerEntry is one row of the coupon ledger: what a branch did to a
// coupon, for which order, under which DTM transaction.
type LedgerEntry struct {
	ID         int64
	Op         string
	OrderNo    string
	GID        string
	BranchID   string
	CouponID   int64
	CouponCode string
	UserID     int64
	TemplateID int64
	Discount   int64
	CreatedAt  time.Time
}

// CouponRecord is a coupon with its ledger history, oldest first.
type CouponRecord struct {
	Coupon *Coupon
	Ledger []LedgerEntry
}

// LookupCoupons finds a coupon by code, whoever holds it, or a user's
// coupons (newest first, paged), each with its ledger history: what an
// operator needs to answer "what happened to this coupon".
func (s *Service) LookupCoupons(ctx context.Context, code string, userID int64, p Page) ([]CouponRecord, string, error) {
	var (
		cs   []*Coupon
		next string
		err  error
	)
	switch {
	case code != "":
		if !ValidCode(code) {
			return nil, "", Invalid("coupon_code", "is not a coupon code")
		}
		owner, ok, oerr := s.branches.Owner(ctx, code)
		if oerr != nil {
			return nil, "", oerr
		}
		if !ok {
			return nil, "", couponNotFound(ENOTFOUND, code)
		}
		userID = owner
		c, err := s.coupons.ByCode(ctx, owner, code)
		if err != nil {
			return nil, "", err
		}
		cs = []*Coupon{c}
	case userID > 0:
		if p, err = checkPage(p); err != nil {
			return nil, "", err
		}
		if cs, next, err = s.coupons.ListByUser(ctx, userID, CouponFilter{Now: s.now()}, p); err != nil {
			return nil, "", err
		}
	default:
		return nil, "", Invalid("coupon_code", "coupon_code or user_id is required")
	}
	s.effective(cs)
	ids := make([]int64, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	entries, err := s.coupons.Ledger(ctx, userID, ids)
	if err != nil {
		return nil, "", err
	}
	byCoupon := map[int64][]LedgerEntry{}
	for _, e := range entries {
		byCoupon[e.CouponID] = append(byCoupon[e.CouponID], e)
	}
	out := make([]CouponRecord, len(cs))
	for i, c := range cs {
		out[i] = CouponRecord{Coupon: c, Ledger: byCoupon[c.ID]}
	}
	return out, next, nil
}

// ListUserCoupons lists a user's coupons from their shard with effective statuses.
func (s *Service) ListUserCoupons(ctx context.Context, userID int64, f CouponFilter, p Page) ([]*Coupon, string, error) {
	if err := checkID("user_id", userID); err != nil {
		return nil, "", err
	}
	if f.TemplateID < 0 {
		return nil, "", Invalid("template_id", "must not be negative")
	}
	if err := checkEnum("status", f.Status, CouponAvailable, CouponExpired); err != nil {
		return nil, "", err
	}
	p, err := checkPage(p)
	if err != nil {
		return nil, "", err
	}
	f.Now = s.now()
	// One query reads the page and the user's unfinished phone binds; in
	// the rare case there is one, the move is finished and the page read
	// again, so that a list never misses coupons in the middle of a move.
	cs, next, binds, err := s.coupons.ListByUserAndBinds(ctx, userID, f, p)
	if err != nil {
		return nil, "", err
	}
	if len(binds) > 0 && s.phones != nil {
		s.finishBinds(ctx, userID)
		if cs, next, err = s.coupons.ListByUser(ctx, userID, f, p); err != nil {
			return nil, "", err
		}
	}
	s.effective(cs)
	return cs, next, nil
}

// GetCoupon reads one of the user's coupons by code or ID.
func (s *Service) GetCoupon(ctx context.Context, userID int64, code string, id int64) (*Coupon, error) {
	if err := checkID("user_id", userID); err != nil {
		return nil, err
	}
	s.finishBinds(ctx, userID)
	var (
		c   *Coupon
		err error
	)
	switch {
	case code != "":
		if !ValidCode(code) {
			return nil, Invalid("coupon_code", "is not a coupon code")
		}
		c, err = s.coupons.ByCode(ctx, userID, code)
		if ErrorCode(err) == ENOTFOUND {
			return nil, couponNotFound(ENOTFOUND, code)
		}
	case id > 0:
		c, err = s.coupons.ByID(ctx, userID, id)
		if ErrorCode(err) == ENOTFOUND {
			return nil, couponNotFound(ENOTFOUND, strconv.FormatInt(id, 10))
		}
	default:
		return nil, Invalid("coupon_code", "coupon_code or coupon_id is required")
	}
	if err != nil {
		return nil, err
	}
	c.Status = c.EffectiveStatus(s.now())
	return c, nil
}
