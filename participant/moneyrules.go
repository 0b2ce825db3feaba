package participant

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// RuleChange is one money rule that differs between two versions of a
// template, with both values as text (amounts in minor units, times in
// RFC 3339 UTC). Field is the rule's name in the API.
type RuleChange struct {
	Field         string
	Before, After string
}

// MoneyRuleChanges lists the money rules that differ between before and
// after, in a fixed order; none when they give away the same value.
//
// Money rules are everything that decides what a coupon of the template is
// worth, on which orders, to how many uses per user and for how long: the
// coupon type, discount amount, percentage and its cap, the minimum order,
// the product lines, the usage rule, whether used coupons come back on a
// refund, the per-user and daily use limits and the validity window.
// Presentation (name, description, logo), status and stock are not: stock
// is the budget, topped up by AddStock under its own audit entity.
//
// This is the one definition: whoever changes one of these on a template
// becomes its money editor, and maker-checker keeps them, like the
// creator, from approving it.
func MoneyRuleChanges(before, after *Template) []RuleChange {
	var out []RuleChange
	add := func(field, b, a string) {
		if b != a {
			out = append(out, RuleChange{Field: field, Before: b, After: a})
		}
	}
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }
	// To the microsecond the catalog stores: a snapshot taken before the
	// write (an audit row's) may carry nanoseconds the stored row lost.
	tm := func(v time.Time) string {
		if v.IsZero() {
			return ""
		}
		return storedTime(v).Format(time.RFC3339Nano)
	}
	add("coupon_type", couponTypeName(before.Type), couponTypeName(after.Type))
	add("discount_amount", i64(before.DiscountAmount), i64(after.DiscountAmount))
	add("percent_off", i64(int64(before.PercentOff)), i64(int64(after.PercentOff)))
	add("max_discount", i64(before.MaxDiscount), i64(after.MaxDiscount))
	add("min_order_amount", i64(before.MinOrderAmount), i64(after.MinOrderAmount))
	add("product_lines", productLineSet(before.ProductLines), productLineSet(after.ProductLines))
	add("usage_rule", before.UsageRule, after.UsageRule)
	add("returnable", strconv.FormatBool(before.Returnable), strconv.FormatBool(after.Returnable))
	add("per_user_limit", i64(int64(before.PerUserLimit)), i64(int64(after.PerUserLimit)))
	add("daily_use_limit", i64(int64(before.DailyUseLimit)), i64(int64(after.DailyUseLimit)))
	add("valid_from", tm(before.ValidFrom), tm(after.ValidFrom))
	add("valid_until", tm(before.ValidUntil), tm(after.ValidUntil))
	add("valid_days_after_claim", i64(int64(before.ValidDaysAfterClaim)), i64(int64(after.ValidDaysAfterClaim)))
	return out
}

// productLineSet is the product lines as CoversProductLine sees them: a
// set, without case.
func productLineSet(lines []string) string {
	s := make([]string, len(lines))
	for i, l := range lines {
		s[i] = strings.ToLower(l)
	}
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}

func couponTypeName(t CouponType) string {
	switch t {
	case FixedAmount:
		return "FIXED_AMOUNT"
	case PercentOff:
		return "PERCENT_OFF"
	}
	return "coupon_type(" + strconv.Itoa(int(t)) + ")"
}
