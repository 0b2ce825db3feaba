package participant

import (
	"strings"
	"unicode/utf8"

	"github.com/opencoupon/coupon/participant/rules"
	"github.com/opencoupon/coupon/participant/shape"
)

// Every check of the service's input, in one place. A failed check is an
// EINVALID error naming the field; nothing is written for it.

// Limits on what the service accepts; order bounds are in package shape.
const (
	MaxStock          = 1_000_000_000_000 // units in one template
	MaxOrderAmount    = shape.MaxAmount
	maxValidDays      = 3650
	maxProductLines   = 64
	maxNameLen        = 255
	maxTextLen        = 1024
	maxPrincipalLen   = 128
	maxCampaignType   = 64
	maxProductLineLen = shape.MaxProductLineLen
)

func checkText(field, v string, required bool, maxLen int) error {
	if required && strings.TrimSpace(v) == "" {
		return Invalid(field, "is required")
	}
	if len(v) > maxLen {
		return Invalid(field, "is longer than %d bytes", maxLen)
	}
	if !utf8.ValidString(v) {
		return Invalid(field, "is not valid UTF-8")
	}
	return nil
}

// CheckRequestID validates an idempotency key: 1 to 64 printable ASCII bytes.
func CheckRequestID(field, v string) error { return fieldError(shape.Key(field, v)) }

// fieldError turns a shape check's answer into an EINVALID error.
func fieldError(fe *shape.FieldError) error {
	if fe == nil {
		return nil
	}
	return Invalid(fe.Field, "%s", fe.Message)
}

// ValidCode reports whether s has the shape of a coupon code.
func ValidCode(s string) bool { return shape.Code(s) }

func checkOrder(userID int64, o Order) error { return fieldError(shape.CheckOrder(userID, o)) }

func checkID(field string, id int64) error {
	if id <= 0 {
		return Invalid(field, "must be a positive id, got %d", id)
	}
	return nil
}

func (c *Campaign) validate() error {
	if c.RequestID != "" {
		if err := CheckRequestID("request_id", c.RequestID); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"name", c.Name, true, maxNameLen},
		{"description", c.Description, false, maxTextLen},
		{"campaign_type", c.Type, false, maxCampaignType},
		{"created_by", c.CreatedBy, true, maxPrincipalLen},
	} {
		if err := checkText(f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	if c.StartTime.IsZero() {
		return Invalid("start_time", "is required")
	}
	if c.EndTime.IsZero() {
		return Invalid("end_time", "is required")
	}
	if !c.StartTime.Before(c.EndTime) {
		return Invalid("end_time", "must be after start_time")
	}
	return nil
}

func checkPage(p Page) (Page, error) {
	if p.Size < 0 {
		return p, Invalid("page_size", "must not be negative")
	}
	if p.Size == 0 {
		p.Size = 50
	}
	if p.Size > 500 {
		p.Size = 500
	}
	if len(p.After) > 256 {
		return p, Invalid("page_token", "is malformed")
	}
	return p, nil
}

// CheckRules validates t's money rules and usage rule as CreateTemplate
// does, storing nothing: the console checks a draft with it as the operator
// types.
func (t *Template) CheckRules() error { return t.validateRules() }

// validateRules checks the money rules of a template.
func (t *Template) validateRules() error {
	switch t.Type {
	case FixedAmount:
		if t.DiscountAmount <= 0 {
			return Invalid("discount_amount", "must be > 0 for FIXED_AMOUNT")
		}
		if t.PercentOff != 0 {
			return Invalid("percent_off", "must be 0 for FIXED_AMOUNT")
		}
		if t.MinOrderAmount > 0 && t.DiscountAmount > t.MinOrderAmount {
			return Invalid("discount_amount", "must not exceed min_order_amount (%d)", t.MinOrderAmount)
		}
	case PercentOff:
		if t.PercentOff < 1 || t.PercentOff > 100 {
			return Invalid("percent_off", "must be in 1..100, got %d", t.PercentOff)
		}
		if t.DiscountAmount != 0 {
			return Invalid("discount_amount", "must be 0 for PERCENT_OFF (use max_discount for a cap)")
		}
		if t.MaxDiscount < 0 {
			return Invalid("max_discount", "must not be negative")
		}
	default:
		return Invalid("coupon_type", "must be FIXED_AMOUNT or PERCENT_OFF")
	}
	if t.DiscountAmount > MaxOrderAmount || t.MaxDiscount > MaxOrderAmount {
		return Invalid("discount_amount", "is too large")
	}
	if t.MinOrderAmount < 0 || t.MinOrderAmount > MaxOrderAmount {
		return Invalid("min_order_amount", "must be in 0..%d", int64(MaxOrderAmount))
	}
	if len(t.ProductLines) > maxProductLines {
		return Invalid("product_lines", "has more than %d entries", maxProductLines)
	}
	for _, pl := range t.ProductLines {
		if err := checkText("product_lines", pl, true, maxProductLineLen); err != nil {
			return err
		}
	}
	if _, err := rules.Compile(t.UsageRule); err != nil {
		e := Invalid("usage_rule", "%v", err)
		e.Reason = ReasonInvalidRule
		return e
	}
	return nil
}

func (t *Template) validate(maxSub int32) error {
	if t.RequestID != "" {
		if err := CheckRequestID("request_id", t.RequestID); err != nil {
			return err
		}
	}
	if err := checkID("campaign_id", t.CampaignID); err != nil {
		return err
	}
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"name", t.Name, true, maxNameLen},
		{"description", t.Description, false, maxTextLen},
		{"logo", t.Logo, false, maxTextLen},
		{"created_by", t.CreatedBy, true, maxPrincipalLen},
	} {
		if err := checkText(f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	if err := t.validateRules(); err != nil {
		return err
	}
	if t.TotalStock < 0 || t.TotalStock > MaxStock {
		return Invalid("total_stock", "must be in 0..%d, got %d", int64(MaxStock), t.TotalStock)
	}
	if t.PerUserLimit < 0 {
		return Invalid("per_user_limit", "must not be negative (0 means no limit)")
	}
	if t.DailyUseLimit < 0 {
		return Invalid("daily_use_limit", "must not be negative (0 means no limit)")
	}
	if t.ValidFrom.IsZero() {
		return Invalid("valid_from", "is required")
	}
	if t.ValidUntil.IsZero() {
		return Invalid("valid_until", "is required")
	}
	if !t.ValidFrom.Before(t.ValidUntil) {
		return Invalid("valid_until", "must be after valid_from")
	}
	if t.ValidDaysAfterClaim < 0 || t.ValidDaysAfterClaim > maxValidDays {
		return Invalid("valid_days_after_claim", "must be in 0..%d", maxValidDays)
	}
	if t.SubStockCount < 0 || t.SubStockCount > maxSub {
		return Invalid("sub_stock_count", "must be in 0..%d", maxSub)
	}
	return nil
}

func (r ClaimRequest) validate() error {
	if err := CheckRequestID("request_id", r.RequestID); err != nil {
		return err
	}
	if err := checkID("user_id", r.UserID); err != nil {
		return err
	}
	return checkID("template_id", r.TemplateID)
}

// checkEnum refuses a status filter or change outside the enum's values;
// 0 means "any" or "no change" and passes.
func checkEnum[T ~int32](field string, v, lo, hi T) error {
	if v != 0 && (v < lo || v > hi) {
		return Invalid(field, "unknown value %d", v)
	}
	return nil
}
