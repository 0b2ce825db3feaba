package shop_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestCreateOrderWithCoupon runs the whole shop against a real coupon
// service and coordinator: the coupon ends USED exactly when the order is
// PAID, and AVAILABLE again whenever the order is CANCELLED.
func TestCreateOrderWithCoupon(t *testing.T) {
	dtm := dtmtest.Start(t)
	coupons := coupontest.Start(t)
	e := mustStart(t, dtm.GRPCAddr, coupons.Addr)
	ctx := context.Background()

	now := time.Now()
	campaign, err := coupons.Admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "shop test", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	tpl, err := coupons.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: campaign.GetId(), Name: "5 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: 100,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
		CreatedBy: "alice",
	})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if _, err := coupons.AdminAs(coupontest.TokenBob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.GetId(), ApprovedBy: "bob"}); err != nil {
		t.Fatalf("ApproveTemplate: %v", err)
	}
	claim := func(t *testing.T, userID int64) string {
		t.Helper()
		c, err := coupons.Coupons.ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: t.Name(), UserId: userID, TemplateId: tpl.GetId()})
		if err != nil {
			t.Fatalf("ClaimCoupon: %v", err)
		}
		return c.GetCode()
	}
	couponStatus := func(t *testing.T, userID int64, code string) couponv1.Coupon_Status {
		t.Helper()
		c, err := coupons.Coupons.GetCoupon(ctx, &couponv1.GetCouponRequest{UserId: userID, CouponCode: code})
		if err != nil {
			t.Fatalf("GetCoupon: %v", err)
		}
		return c.GetStatus()
	}

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
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			userID := int64(100 + i)
			mustDeposit(t, e, userID, tt.deposit)
			code := claim(t, userID)
			req := newOrder(fmt.Sprintf("coupon-%d", i), userID, tt.amount)
			req.CouponCode = code
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
			if o.GetStatus() != tt.wantStatus || o.GetFailureReason() != tt.wantReason ||
				o.GetDiscountAmount() != tt.wantDiscount || o.GetDiscountAmount()+o.GetPayableAmount() != tt.amount {
				t.Errorf("order = %v; want %v, reason %q, discount %d", o, tt.wantStatus, tt.wantReason, tt.wantDiscount)
			}
			if b, f := mustAccount(t, e, userID); b != tt.wantBalance || f != 0 {
				t.Errorf("account = %d/%d; want %d/0", b, f, tt.wantBalance)
			}
			if got := couponStatus(t, userID, code); got != tt.wantCoupon {
				t.Errorf("coupon = %v; want %v", got, tt.wantCoupon)
			}
		})
	}
}
