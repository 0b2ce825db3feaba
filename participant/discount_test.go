package participant_test

import (
	"math/big"
	"testing"

	"github.com/opencoupon/coupon/participant"
)

// oracle computes what a template takes off an eligible amount in
// arbitrary precision: ⌊eligible × p / 100⌋, capped, or the fixed amount,
// never more than the eligible amount.
func oracle(t *participant.Template, eligible int64) int64 {
	if eligible <= 0 {
		return 0
	}
	var d *big.Int
	switch t.Type {
	case participant.FixedAmount:
		d = big.NewInt(t.DiscountAmount)
	case participant.PercentOff:
		d = new(big.Int).Mul(big.NewInt(eligible), big.NewInt(int64(t.PercentOff)))
		d.Quo(d, big.NewInt(100))
		if t.MaxDiscount > 0 && d.Cmp(big.NewInt(t.MaxDiscount)) > 0 {
			d = big.NewInt(t.MaxDiscount)
		}
	}
	if d.Cmp(big.NewInt(eligible)) > 0 {
		d = big.NewInt(eligible)
	}
	return d.Int64()
}

// clamp maps any v into lo..hi, so the fuzzer explores the whole accepted
// range of every field.
func clamp(v, lo, hi int64) int64 {
	if v >= lo && v <= hi {
		return v
	}
	span := uint64(hi - lo + 1)
	return lo + int64(uint64(v)%span)
}

func FuzzDiscount(f *testing.F) {
	for _, seed := range []struct {
		eligible, amount, cap int64
		pct                   int32
		percent               bool
	}{
		{10000, 0, 0, 10, true},
		{participant.MaxOrderAmount, 0, 0, 100, true},
		{participant.MaxOrderAmount, 0, participant.MaxOrderAmount, 99, true},
		{92233720368547759, 0, 0, 100, true}, // where eligible × 100 first overflows int64
		{99, 0, 0, 1, true},
		{1, 0, 0, 100, true},
		{5000, 500, 0, 0, false},
		{300, 500, 0, 0, false},
	} {
		f.Add(seed.eligible, seed.amount, seed.cap, seed.pct, seed.percent)
	}
	f.Fuzz(func(t *testing.T, eligible, fixed, capAmount int64, pct int32, percent bool) {
		eligible = clamp(eligible, 0, participant.MaxOrderAmount)
		tpl := &participant.Template{Type: participant.FixedAmount, DiscountAmount: clamp(fixed, 1, participant.MaxOrderAmount)}
		if percent {
			tpl = &participant.Template{Type: participant.PercentOff, PercentOff: int32(clamp(int64(pct), 1, 100)),
				MaxDiscount: clamp(capAmount, 0, participant.MaxOrderAmount)}
		}
		got, want := tpl.Discount(eligible), oracle(tpl, eligible)
		if got != want {
			t.Fatalf("Discount(%d) of %+v = %d, want %d", eligible, tpl, got, want)
		}
		if got < 0 || got > eligible {
			t.Fatalf("Discount(%d) = %d outside 0..eligible", eligible, got)
		}
	})
}

func TestEligibleAmount(t *testing.T) {
	food := &participant.Template{ProductLines: []string{"food", "ride"}}
	all := &participant.Template{}
	basket := participant.Order{Amount: 12000, Items: []participant.Item{
		{SKU: "rice", ProductLine: "food", Amount: 3000},
		{SKU: "phone", ProductLine: "electronics", Amount: 7000},
		{SKU: "taxi", ProductLine: "RIDE", Amount: 1000},
	}} // 1000 of shipping on top of the lines
	tests := []struct {
		name string
		tpl  *participant.Template
		o    participant.Order
		want int64
	}{
		{"mixed basket: only the covered lines", food, basket, 4000},
		{"no product lines: the whole order, shipping included", all, basket, 12000},
		{"no lines, covered order line", food, participant.Order{Amount: 5000, ProductLine: "Food"}, 5000},
		{"no lines, other order line", food, participant.Order{Amount: 5000, ProductLine: "electronics"}, 0},
		{"no lines, no order line", food, participant.Order{Amount: 5000}, 0},
		{"lines win over the order's line", food, participant.Order{Amount: 5000, ProductLine: "food",
			Items: []participant.Item{{ProductLine: "electronics", Amount: 5000}}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tpl.Eligible(tt.o); got != tt.want {
				t.Errorf("Eligible = %d, want %d", got, tt.want)
			}
		})
	}
	// 10 % off food takes 10 % of the food, and its threshold is the food.
	pct := &participant.Template{Type: participant.PercentOff, PercentOff: 10, ProductLines: []string{"food"}}
	if got := pct.Discount(pct.Eligible(basket)); got != 300 {
		t.Errorf("10%% off food on the basket = %d, want 300", got)
	}
}

func TestCodeID(t *testing.T) {
	for _, id := range []int64{1, 42, 1 << 40, 1<<63 - 1} {
		got, ok := participant.CodeID(participant.CouponCode(id))
		if !ok || got != id {
			t.Errorf("CodeID(CouponCode(%d)) = %d, %v", id, got, ok)
		}
	}
	// Codes minted before the 64-bit tag (13 ID digits and 3 random ones)
	// still carry their ID.
	if got, ok := participant.CodeID("000000000001AXYZ"); !ok || got != 42 {
		t.Errorf("CodeID(%q) = %d, %v; want 42", "000000000001AXYZ", got, ok)
	}
	for _, bad := range []string{"", "short", "ZZZZZZZZZZZZZZZZ", "0000000000000ab1", "8000000000000000", "G000000000000000000000000", "G0000000000000000000000000"} {
		if id, ok := participant.CodeID(bad); ok {
			t.Errorf("CodeID(%q) = %d, true; want false", bad, id)
		}
	}
}
