package participant

import (
	"context"
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
