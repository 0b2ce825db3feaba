package participant

import (
	"context"
	"sort"
	"strings"

	"github.com/opencoupon/coupon/participant/rules"
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
	if err := checkOrder(userID, o); err != nil {
		return nil, err
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
		if now.Before(t.ValidFrom) {
			continue
		}
		eligible, err := s.checkRules(t, o)
		if err != nil {
			continue
		}
		d := t.Discount(eligible)
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

// checkRules applies the template's rules to an order and returns the
// amount the coupon applies to (see Template.Eligible): the threshold and
// the discount are measured on it, not on the whole basket.
func (s *Service) checkRules(t *Template, o Order) (int64, error) {
	eligible := t.Eligible(o)
	if eligible <= 0 {
		return 0, refuse(ReasonRuleNotMet, "no part of the order is in the product lines %s", strings.Join(t.ProductLines, ", "))
	}
	if eligible < t.MinOrderAmount {
		return 0, refuse(ReasonRuleNotMet, "eligible amount %d is below the threshold %d", eligible, t.MinOrderAmount)
	}
	if strings.TrimSpace(t.UsageRule) == "" {
		return eligible, nil
	}
	rule, err := s.rules.Get(t.UsageRule)
	if err != nil {
		return 0, refuse(ReasonRuleNotMet, "template %d rule does not compile: %v", t.ID, err)
	}
	ok, err := rule.Match(ruleOrder(o))
	if err != nil {
		return 0, refuse(ReasonRuleNotMet, "rule: %v", err)
	}
	if !ok {
		return 0, refuse(ReasonRuleNotMet, "order does not meet the rule %q", t.UsageRule)
	}
	return eligible, nil
}

func ruleOrder(o Order) rules.Order {
	ro := rules.Order{OrderNo: o.OrderNo, UserID: o.UserID, Amount: o.Amount, Currency: o.Currency, ProductLine: o.ProductLine}
	for _, it := range o.Items {
		ro.Items = append(ro.Items, rules.Item{SKU: it.SKU, ProductLine: it.ProductLine, Quantity: it.Quantity, Amount: it.Amount})
	}
	return ro
}
