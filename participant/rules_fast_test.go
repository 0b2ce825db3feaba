package participant_test

import (
	"testing"

	"github.com/opencoupon/coupon/participant"
)

// TestFastRuleDecisions: a Try's eligibility and discount decisions — the
// product lines, the threshold, the usage rule and the discount type — as
// the service makes them on the locked coupon.
func TestFastRuleDecisions(t *testing.T) {
	food := participant.Order{OrderNo: "o1", UserID: fastUser, Amount: 6000, Currency: "CNY", Items: []participant.Item{
		{SKU: "rice", ProductLine: "food", Quantity: 1, Amount: 3000},
		{SKU: "phone", ProductLine: "electronics", Quantity: 1, Amount: 2000},
	}} // 1000 of shipping on top of the lines
	tests := []struct {
		name         string
		template     func(*participant.Template)
		order        participant.Order
		wantDiscount int64
		wantReason   string // "" when the Try succeeds
	}{
		{"fixed amount", nil, food, 500, ""},
		{"fixed amount above the order", func(t *participant.Template) { t.DiscountAmount = 9000 }, food, 6000, ""},
		{"percent off", func(t *participant.Template) { t.Type, t.PercentOff = participant.PercentOff, 10 }, food, 600, ""},
		{"percent off rounds down", func(t *participant.Template) { t.Type, t.PercentOff = participant.PercentOff, 15 },
			participant.Order{OrderNo: "o1", Amount: 999}, 149, ""},
		{"percent off capped", func(t *participant.Template) {
			t.Type, t.PercentOff, t.MaxDiscount = participant.PercentOff, 10, 250
		}, food, 250, ""},
		{"percent off the covered lines only", func(t *participant.Template) {
			t.Type, t.PercentOff, t.ProductLines = participant.PercentOff, 10, []string{"food"}
		}, food, 300, ""},
		{"no covered line", func(t *participant.Template) { t.ProductLines = []string{"ride"} }, food, 0, participant.ReasonRuleNotMet},
		{"threshold met", func(t *participant.Template) { t.MinOrderAmount = 6000 }, food, 500, ""},
		{"threshold not met", func(t *participant.Template) { t.MinOrderAmount = 6001 }, food, 0, participant.ReasonRuleNotMet},
		{"threshold on the covered lines", func(t *participant.Template) {
			t.MinOrderAmount, t.ProductLines = 3500, []string{"food"}
		}, food, 0, participant.ReasonRuleNotMet},
		{"usage rule met", func(t *participant.Template) {
			t.UsageRule = `order.currency == "CNY" && any(order.items, .product_line == "food")`
		}, food, 500, ""},
		{"usage rule not met", func(t *participant.Template) { t.UsageRule = `order.currency == "USD"` }, food, 0, participant.ReasonRuleNotMet},
		{"usage rule that does not compile", func(t *participant.Template) { t.UsageRule = `order.amount >` }, food, 0, participant.ReasonRuleNotMet},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFast(t)
			tpl := e.template(tc.template)
			c := e.claim(tpl.ID, fastUser, "claim-a")
			res, err := e.svc.Lock(t.Context(), participant.Branch{TransType: "tcc", GID: "g1", BranchID: "01", Op: "try"},
				participant.BranchRequest{UserID: fastUser, Code: c.Code, Order: tc.order})
			if tc.wantReason != "" {
				wantError(t, "try", err, participant.EABORTED, tc.wantReason)
				if s := e.stored(fastUser, c.Code); s.Status != participant.CouponAvailable {
					t.Errorf("refused Try left the coupon %s, want AVAILABLE", s.Status)
				}
				return
			}
			wantError(t, "try", err, "", "")
			if res.Discount != tc.wantDiscount || res.Payable != tc.order.Amount-tc.wantDiscount {
				t.Errorf("discount %d, payable %d; want %d, %d", res.Discount, res.Payable, tc.wantDiscount, tc.order.Amount-tc.wantDiscount)
			}
			if s := e.stored(fastUser, c.Code); s.DiscountAmount != tc.wantDiscount {
				t.Errorf("stored discount %d, want %d", s.DiscountAmount, tc.wantDiscount)
			}
		})
	}
}

// TestFastApplicableCoupons: the user's usable coupons for an order, best
// discount first, without those whose rules the order does not meet.
func TestFastApplicableCoupons(t *testing.T) {
	e := newFast(t)
	camp := e.campaign(nil)
	small := e.templateIn(camp, nil)
	big := e.templateIn(camp, func(t *participant.Template) { t.DiscountAmount = 2000 })
	rides := e.templateIn(camp, func(t *participant.Template) { t.ProductLines = []string{"ride"} })
	high := e.templateIn(camp, func(t *participant.Template) { t.MinOrderAmount = 100000 })
	want := []string{e.claim(big.ID, fastUser, "a").Code, e.claim(small.ID, fastUser, "b").Code}
	e.claim(rides.ID, fastUser, "c")
	e.claim(high.ID, fastUser, "d")
	e.claim(big.ID, 8, "e") // another user's

	got, err := e.svc.ApplicableCoupons(t.Context(), fastUser, participant.Order{OrderNo: "o1", Amount: 5000, ProductLine: "food"})
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, a := range got {
		codes = append(codes, a.Coupon.Code)
	}
	if len(codes) != len(want) || codes[0] != want[0] || codes[1] != want[1] {
		t.Fatalf("applicable = %v, want %v", codes, want)
	}
	if got[0].Discount != 2000 || got[0].Payable != 3000 {
		t.Errorf("best = discount %d, payable %d; want 2000, 3000", got[0].Discount, got[0].Payable)
	}
	_, err = e.svc.ApplicableCoupons(t.Context(), fastUser, participant.Order{OrderNo: "o1", Amount: 0})
	wantError(t, "order without an amount", err, participant.EINVALID, participant.ReasonInvalidArgument)
}
