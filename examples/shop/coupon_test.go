package shop_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/opencoupon/coupon/examples/shop"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/janitor"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestCreateOrderWithCoupon runs the whole shop, in both modes, against a
// real coupon service and coordinator: the coupon ends USED exactly when the
// order is PAID, and AVAILABLE again whenever the order is CANCELLED. A
// Saga's refusals carry the same reasons as the TCC's, and a coupon that
// does not apply cancels a Saga order before any Saga starts.
func TestCreateOrderWithCoupon(t *testing.T) {
	dtm := dtmtest.Start(t)
	coupons := mustCoupons(t)
	e := mustStart(t, dtm.GRPCAddr, coupons.Addr)
	ctx := context.Background()
	tpl := coupons.mustTemplate(t, nil)

	tests := []struct {
		name         string
		deposit      int64
		amount       int64
		reuse        bool // place a second order with the same coupon
		wantStatus   shopv1.Order_Status
		wantReason   string
		wantDiscount int64
		wantBalance  int64
		wantCoupon   couponv1.Coupon_Status
	}{
		{"paid", 10000, 6000, false, shopv1.Order_PAID, "", 500, 4500, couponv1.Coupon_USED},
		{"payment fails, coupon released", 1000, 6000, false, shopv1.Order_CANCELLED, "INSUFFICIENT_BALANCE", 0, 1000, couponv1.Coupon_AVAILABLE},
		{"rule not met", 10000, 3000, false, shopv1.Order_CANCELLED, "RULE_NOT_MET", 0, 10000, couponv1.Coupon_AVAILABLE},
		{"coupon already used", 20000, 6000, true, shopv1.Order_CANCELLED, "COUPON_NOT_AVAILABLE", 0, 14500, couponv1.Coupon_USED},
	}
	status := janitor.CoordinatorStatus(dtm.HTTPAddr, nil)
	for m, mode := range []string{shop.ModeTCC, shop.ModeSaga} {
		t.Run(mode, func(t *testing.T) {
			for i, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					userID := int64(100 + 10*m + i)
					mustDeposit(t, e, userID, tt.deposit)
					code := coupons.mustClaim(t, tpl, userID)
					req := newOrder(fmt.Sprintf("coupon-%s-%d", mode, i), userID, tt.amount)
					req.CouponCode, req.Mode = code, mode
					if tt.reuse {
						first, err := e.Orders.CreateOrder(ctx, req)
						if err != nil || first.GetStatus() != shopv1.Order_PAID {
							t.Fatalf("first CreateOrder = %v, %v; want PAID", first, err)
						}
						req.OrderNo += "-again"
					}
					o, err := e.Orders.CreateOrder(ctx, req)
					if err != nil {
						t.Fatalf("CreateOrder: %v", err)
					}
					if o.GetStatus() != tt.wantStatus || o.GetFailureReason() != tt.wantReason || o.GetMode() != mode ||
						o.GetDiscountAmount() != tt.wantDiscount || o.GetDiscountAmount()+o.GetPayableAmount() != tt.amount {
						t.Errorf("order = %v; want %v, reason %q, discount %d, mode %s", o, tt.wantStatus, tt.wantReason, tt.wantDiscount, mode)
					}
					if b, f := mustAccount(t, e, userID); b != tt.wantBalance || f != 0 {
						t.Errorf("account = %d/%d; want %d/0", b, f, tt.wantBalance)
					}
					if got := coupons.coupon(t, userID, code).GetStatus(); got != tt.wantCoupon {
						t.Errorf("coupon = %v; want %v", got, tt.wantCoupon)
					}
					// A Saga starts only for a coupon that applies.
					if st, err := status(ctx, o.GetGid()); mode == shop.ModeSaga && tt.wantReason == "RULE_NOT_MET" && (err != nil || st != janitor.Unknown) {
						t.Errorf("coordinator knows the refused saga order's gid %s: %q, %v", o.GetGid(), st, err)
					}
				})
			}
		})
	}
}
