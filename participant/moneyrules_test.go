package participant_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opencoupon/coupon/participant"
)

func TestMoneyRuleChanges(t *testing.T) {
	from := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	base := func() *participant.Template {
		return &participant.Template{
			ID: 7, CampaignID: 3, Name: "1 off 50", Description: "d", Logo: "l", Type: participant.FixedAmount,
			DiscountAmount: 100, MinOrderAmount: 5000, ProductLines: []string{"food", "Drinks"}, UsageRule: `order.currency == "CNY"`,
			Returnable: true, TotalStock: 10, PerUserLimit: 1, DailyUseLimit: 1, ValidFrom: from, ValidUntil: from.Add(48 * time.Hour),
			ValidDaysAfterClaim: 7, Status: participant.TemplatePendingApproval, CreatedBy: "alice", SubStockCount: 1, Version: 1,
		}
	}
	tests := []struct {
		name string
		edit func(*participant.Template)
		want []participant.RuleChange
	}{
		{"nothing", func(*participant.Template) {}, nil},
		{"presentation, status, stock and bookkeeping", func(t *participant.Template) {
			t.Name, t.Description, t.Logo = "renamed", "other", "other.png"
			t.Status, t.ApprovedBy, t.MoneyEditedBy = participant.TemplateActive, "carol", "bob"
			t.TotalStock, t.SubStockCount, t.Version = 1000, 4, 9
			t.UpdatedAt = from.Add(time.Hour)
		}, nil},
		{"product lines reordered and recased", func(t *participant.Template) { t.ProductLines = []string{"drinks", "FOOD", "food"} }, nil},
		{"same instant in another zone", func(t *participant.Template) { t.ValidFrom = from.In(time.FixedZone("CST", 8*3600)) }, nil},
		{"below the microsecond the catalog stores", func(t *participant.Template) { t.ValidUntil = t.ValidUntil.Add(999 * time.Nanosecond) }, nil},
		{"a microsecond", func(t *participant.Template) { t.ValidUntil = t.ValidUntil.Add(time.Microsecond) },
			[]participant.RuleChange{{Field: "valid_until", Before: "2026-12-03T00:00:00Z", After: "2026-12-03T00:00:00.000001Z"}}},
		{"discount", func(t *participant.Template) { t.DiscountAmount = 4900 },
			[]participant.RuleChange{{Field: "discount_amount", Before: "100", After: "4900"}}},
		{"type and percentage", func(t *participant.Template) { t.Type, t.PercentOff, t.MaxDiscount = participant.PercentOff, 10, 2000 },
			[]participant.RuleChange{
				{Field: "coupon_type", Before: "FIXED_AMOUNT", After: "PERCENT_OFF"},
				{Field: "percent_off", Before: "0", After: "10"},
				{Field: "max_discount", Before: "0", After: "2000"},
			}},
		{"threshold", func(t *participant.Template) { t.MinOrderAmount = 0 },
			[]participant.RuleChange{{Field: "min_order_amount", Before: "5000", After: "0"}}},
		{"product lines widened", func(t *participant.Template) { t.ProductLines = nil },
			[]participant.RuleChange{{Field: "product_lines", Before: "drinks,food", After: ""}}},
		{"usage rule", func(t *participant.Template) { t.UsageRule = "" },
			[]participant.RuleChange{{Field: "usage_rule", Before: `order.currency == "CNY"`, After: ""}}},
		{"returnable", func(t *participant.Template) { t.Returnable = false },
			[]participant.RuleChange{{Field: "returnable", Before: "true", After: "false"}}},
		{"limits", func(t *participant.Template) { t.PerUserLimit, t.DailyUseLimit = 0, 5 },
			[]participant.RuleChange{
				{Field: "per_user_limit", Before: "1", After: "0"},
				{Field: "daily_use_limit", Before: "1", After: "5"},
			}},
		{"validity", func(t *participant.Template) {
			t.ValidFrom, t.ValidUntil, t.ValidDaysAfterClaim = from.Add(-time.Hour), from.Add(72*time.Hour), 0
		}, []participant.RuleChange{
			{Field: "valid_from", Before: "2026-12-01T00:00:00Z", After: "2026-11-30T23:00:00Z"},
			{Field: "valid_until", Before: "2026-12-03T00:00:00Z", After: "2026-12-04T00:00:00Z"},
			{Field: "valid_days_after_claim", Before: "7", After: "0"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, after := base(), base()
			tc.edit(after)
			if diff := cmp.Diff(tc.want, participant.MoneyRuleChanges(before, after)); diff != "" {
				t.Errorf("MoneyRuleChanges (-want +got):\n%s", diff)
			}
		})
	}
}
