package participant

import (
	"context"
	"strings"
	"time"

	"github.com/opencoupon/coupon/participant/rules"
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

// Reservation is what a successful Try decided: the coupon is locked for
// the order with this discount, and counts against these daily limits.
type Reservation struct {
	OrderNo  string
	Discount int64
	Day      time.Time
	Limits   []DailyLimit
}

// DailyLimit caps coupon uses per user per UTC day, for one template or,
// with TemplateID 0, across all templates (the risk rule). Limit 0 counts
// without a cap.
type DailyLimit struct {
	TemplateID int64
	Limit      int32
}

// Branches runs the TCC branches on the coupon records.
type Branches interface {
	// Lock locks the user's coupon row and asks decide whether and how to
	// reserve it, then writes the reservation, the daily-use counts and a
	// LOCK ledger row, all with the barrier in one transaction. On a barrier
	// skip (duplicate, or a Try after its Cancel) decide is not called and
	// the coupon is returned as it stands.
	Lock(ctx context.Context, br Branch, userID int64, code string, decide func(c *Coupon) (Reservation, error)) (*Coupon, error)
	// Consume moves the coupon LOCKED by orderNo to USED.
	Consume(ctx context.Context, br Branch, userID int64, code, orderNo string, now time.Time) (*Coupon, error)
	// Release moves the coupon LOCKED by orderNo back to AVAILABLE (EXPIRED
	// when past expiry) and gives back the daily-use counts.
	Release(ctx context.Context, br Branch, userID int64, code, orderNo string, now time.Time) (*Coupon, error)
	// Owner finds which user holds a code, scanning every shard; for
	// explaining refusals only.
	Owner(ctx context.Context, code string) (int64, bool, error)
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

func (r BranchRequest) validate(br Branch) error {
	if br.GID == "" || br.BranchID == "" || br.Op == "" {
		return Errorf(EINVALID, ReasonMissingBarrier, "DTM branch metadata (gid, branch_id, op) is required")
	}
	if err := checkID("user_id", r.UserID); err != nil {
		return err
	}
	if !ValidCode(r.Code) {
		return Invalid("coupon_code", "is not a coupon code")
	}
	if err := CheckRequestID("order.order_no", r.Order.OrderNo); err != nil {
		return err
	}
	if r.Order.UserID != 0 && r.Order.UserID != r.UserID {
		return Invalid("order.user_id", "does not match user_id")
	}
	if r.Order.Amount <= 0 || r.Order.Amount > MaxOrderAmount {
		return Invalid("order.amount", "must be in 1..%d minor units", int64(MaxOrderAmount))
	}
	for _, it := range r.Order.Items {
		if it.Amount < 0 || it.Quantity < 0 {
			return Invalid("order.items", "amounts and quantities must not be negative")
		}
	}
	return nil
}

func refuse(reason, format string, args ...any) error {
	return Errorf(EABORTED, reason, format, args...)
}

// Lock is the TCC Try: it locks the coupon for the order after checking
// ownership, status, expiry, the template's rules and the daily limits, and
// returns the discount. Business refusals are EABORTED so DTM rolls back.
func (s *Service) Lock(ctx context.Context, br Branch, r BranchRequest) (BranchResult, error) {
	if err := r.validate(br); err != nil {
		return BranchResult{}, err
	}
	now := s.now().UTC()
	c, err := s.branches.Lock(ctx, br, r.UserID, r.Code, func(c *Coupon) (Reservation, error) {
		return s.decide(ctx, c, r, now)
	})
	if ErrorCode(err) == ENOTFOUND {
		if owner, ok, oerr := s.branches.Owner(ctx, r.Code); oerr == nil && ok && owner != r.UserID {
			return BranchResult{}, refuse(ReasonNotOwner, "coupon %s belongs to another user", r.Code)
		}
		return BranchResult{}, refuse(ReasonNotFound, "coupon %s not found", r.Code)
	}
	if err != nil {
		return BranchResult{}, err
	}
	if c.Status != CouponLocked || c.OrderNo != r.Order.OrderNo {
		// The barrier skipped the Try: it is a duplicate of one that did not
		// lock, or it arrived after its Cancel (hanging). Either way the
		// order does not hold the coupon.
		return BranchResult{}, refuse(ReasonCouponNotAvailable, "coupon %s is not locked by order %s", r.Code, r.Order.OrderNo)
	}
	return BranchResult{Coupon: c, Discount: c.DiscountAmount, Payable: r.Order.Amount - c.DiscountAmount}, nil
}

func (s *Service) decide(ctx context.Context, c *Coupon, r BranchRequest, now time.Time) (Reservation, error) {
	if c.Status == CouponLocked && c.OrderNo == r.Order.OrderNo {
		return Reservation{}, errAlreadyLocked
	}
	if c.Status == CouponAvailable && !now.Before(c.ExpireAt) || c.Status == CouponExpired {
		return Reservation{}, refuse(ReasonCouponExpired, "coupon %s expired at %s", c.Code, c.ExpireAt.Format(time.RFC3339))
	}
	if c.Status != CouponAvailable {
		return Reservation{}, refuse(ReasonCouponNotAvailable, "coupon %s is %s", c.Code, c.Status)
	}
	t, _, err := s.templates.Get(ctx, c.TemplateID)
	if err != nil {
		return Reservation{}, err
	}
	if now.Before(t.ValidFrom) {
		return Reservation{}, refuse(ReasonRuleNotMet, "coupon %s is not valid before %s", c.Code, t.ValidFrom.Format(time.RFC3339))
	}
	if err := s.checkRules(t, r.Order); err != nil {
		return Reservation{}, err
	}
	d := t.Discount(r.Order.Amount)
	if d <= 0 {
		return Reservation{}, refuse(ReasonRuleNotMet, "coupon %s gives no discount on this order", c.Code)
	}
	// Both counts are always kept, so Cancel gives back exactly what Try
	// took even if a limit changes in between; limit 0 counts without capping.
	return Reservation{OrderNo: r.Order.OrderNo, Discount: d, Day: now, Limits: []DailyLimit{
		{TemplateID: t.ID, Limit: max(t.DailyUseLimit, 0)},
		{TemplateID: 0, Limit: max(s.cfg.MaxDailyUses, 0)},
	}}, nil
}

// errAlreadyLocked tells the store the coupon is already locked by this
// order (a retried Try under a new barrier), so nothing is written.
var errAlreadyLocked = &Error{Code: EABORTED, Reason: "ALREADY_LOCKED", Message: "already locked by this order"}

// IsAlreadyLocked reports whether decide found the coupon locked by the same order.
func IsAlreadyLocked(err error) bool { return err == errAlreadyLocked }

// checkRules applies the template's rules to an order.
func (s *Service) checkRules(t *Template, o Order) error {
	if o.Amount < t.MinOrderAmount {
		return refuse(ReasonRuleNotMet, "order amount %d is below the threshold %d", o.Amount, t.MinOrderAmount)
	}
	if len(t.ProductLines) > 0 {
		lines := []string{o.ProductLine}
		if o.ProductLine == "" {
			lines = lines[:0]
			for _, it := range o.Items {
				lines = append(lines, it.ProductLine)
			}
		}
		ok := false
		for _, l := range lines {
			ok = ok || t.CoversProductLine(l)
		}
		if !ok {
			return refuse(ReasonRuleNotMet, "product line %q is not covered (%s)", o.ProductLine, strings.Join(t.ProductLines, ", "))
		}
	}
	if strings.TrimSpace(t.UsageRule) == "" {
		return nil
	}
	rule, err := s.rules.Get(t.UsageRule)
	if err != nil {
		return refuse(ReasonRuleNotMet, "template %d rule does not compile: %v", t.ID, err)
	}
	ok, err := rule.Match(ruleOrder(o))
	if err != nil {
		return refuse(ReasonRuleNotMet, "rule: %v", err)
	}
	if !ok {
		return refuse(ReasonRuleNotMet, "order does not meet the rule %q", t.UsageRule)
	}
	return nil
}

func ruleOrder(o Order) rules.Order {
	ro := rules.Order{OrderNo: o.OrderNo, UserID: o.UserID, Amount: o.Amount, Currency: o.Currency, ProductLine: o.ProductLine}
	for _, it := range o.Items {
		ro.Items = append(ro.Items, rules.Item{SKU: it.SKU, ProductLine: it.ProductLine, Quantity: it.Quantity, Amount: it.Amount})
	}
	return ro
}

// Consume is the TCC Confirm. It never refuses for business reasons.
func (s *Service) Consume(ctx context.Context, br Branch, r BranchRequest) (BranchResult, error) {
	if err := r.validate(br); err != nil {
		return BranchResult{}, err
	}
	c, err := s.branches.Consume(ctx, br, r.UserID, r.Code, r.Order.OrderNo, s.now().UTC())
	return s.branchResult(ctx, "consume", r, c, err)
}

// Unlock is the TCC Cancel. It never refuses for business reasons.
func (s *Service) Unlock(ctx context.Context, br Branch, r BranchRequest) (BranchResult, error) {
	if err := r.validate(br); err != nil {
		return BranchResult{}, err
	}
	c, err := s.branches.Release(ctx, br, r.UserID, r.Code, r.Order.OrderNo, s.now().UTC())
	return s.branchResult(ctx, "unlock", r, c, err)
}

func (s *Service) branchResult(ctx context.Context, op string, r BranchRequest, c *Coupon, err error) (BranchResult, error) {
	if ErrorCode(err) == ENOTFOUND {
		// Confirm and Cancel must succeed: a coupon that is not the user's
		// was never locked by this order, so there is nothing to do.
		s.log.WarnContext(ctx, op+" of an unknown coupon", "code", r.Code, "user_id", r.UserID, "order_no", r.Order.OrderNo)
		return BranchResult{}, nil
	}
	if err != nil {
		if ErrorCode(err) != EUNAVAILABLE {
			err = Unavailable(op+" coupon", err)
		}
		return BranchResult{}, err
	}
	c.Status = c.EffectiveStatus(s.now())
	return BranchResult{Coupon: c, Discount: c.DiscountAmount, Payable: r.Order.Amount - c.DiscountAmount}, nil
}
