package participant

import (
	"context"
	"sort"
)

// Applicable is a coupon that applies to an order, with what it would give.
type Applicable struct {
	Coupon   *Coupon
	Discount int64
	Payable  int64
}

// ApplicableCoupons lists the user's usable coupons for the order, best
// first: largest discount, then soonest to expire.
func (s *Service) ApplicableCoupons(ctx context.Context, userID int64, o Order) ([]Applicable, error) {
	if err := checkID("user_id", userID); err != nil {
		return nil, err
	}
	if o.UserID != 0 && o.UserID != userID {
		return nil, Invalid("order.user_id", "does not match user_id")
	}
	if o.Amount <= 0 || o.Amount > MaxOrderAmount {
		return nil, Invalid("order.amount", "must be in 1..%d minor units", int64(MaxOrderAmount))
	}
	now := s.now()
	cs, _, err := s.coupons.ListByUser(ctx, userID, CouponFilter{Status: CouponAvailable, Now: now}, Page{Size: 500})
	if err != nil {
		return nil, err
	}
	templates := map[int64]*Template{}
	var out []Applicable
	for _, c := range cs {
		t, ok := templates[c.TemplateID]
		if !ok {
			if t, _, err = s.templates.Get(ctx, c.TemplateID); err != nil {
				return nil, err
			}
			templates[c.TemplateID] = t
		}
		if now.Before(t.ValidFrom) || s.checkRules(t, o) != nil {
			continue
		}
		d := t.Discount(o.Amount)
		if d <= 0 {
			continue
		}
		c.Status = c.EffectiveStatus(now)
		out = append(out, Applicable{Coupon: c, Discount: d, Payable: o.Amount - d})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Discount != out[j].Discount {
			return out[i].Discount > out[j].Discount
		}
		return out[i].Coupon.ExpireAt.Before(out[j].Coupon.ExpireAt)
	})
	return out, nil
}
