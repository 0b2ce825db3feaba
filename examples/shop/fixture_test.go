package shop_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// coupons is a real coupon service with one approved campaign, for the
// shop's flows that use coupons.
type coupons struct {
	*coupontest.Server
	campaign int64
	clock    *clock
}

// clock is the coupon service's clock: the real time plus an offset a test
// can move forward.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time                  { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration)         { c.offset.Add(int64(d)) }
func (c *clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func mustCoupons(tb testing.TB) *coupons {
	tb.Helper()
	clk := &clock{}
	srv := coupontest.Start(tb, func(c *app.Config) { c.Now = clk.Now })
	now := clk.Now()
	campaign, err := srv.Admin.CreateCampaign(context.Background(), &couponv1.CreateCampaignRequest{
		Name: "shop test", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(30 * 24 * time.Hour)),
	})
	if err != nil {
		tb.Fatalf("CreateCampaign: %v", err)
	}
	return &coupons{Server: srv, campaign: campaign.GetId(), clock: clk}
}

// mustTemplate creates and approves "5 off 50", valid for two days, after
// edit changes the request.
func (c *coupons) mustTemplate(tb testing.TB, edit func(*couponv1.CreateTemplateRequest)) int64 {
	tb.Helper()
	ctx := context.Background()
	now := c.clock.Now()
	req := &couponv1.CreateTemplateRequest{
		CampaignId: c.campaign, Name: "5 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: 100,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
		CreatedBy: "alice",
	}
	if edit != nil {
		edit(req)
	}
	tpl, err := c.Admin.CreateTemplate(ctx, req)
	if err != nil {
		tb.Fatalf("CreateTemplate: %v", err)
	}
	if _, err := c.AdminAs(coupontest.TokenBob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.GetId(), Version: tpl.GetVersion(), ApprovedBy: "bob"}); err != nil {
		tb.Fatalf("ApproveTemplate: %v", err)
	}
	return tpl.GetId()
}

// mustClaim claims a coupon of template for the user and returns its code.
func (c *coupons) mustClaim(tb testing.TB, template, userID int64) string {
	tb.Helper()
	cp, err := c.Coupons.ClaimCoupon(context.Background(), &couponv1.ClaimCouponRequest{
		RequestId: fmt.Sprintf("claim-%d-%d", template, userID), UserId: userID, TemplateId: template,
	})
	if err != nil {
		tb.Fatalf("ClaimCoupon: %v", err)
	}
	return cp.GetCode()
}

// coupon reads the user's coupon, with its effective status.
func (c *coupons) coupon(tb testing.TB, userID int64, code string) *couponv1.Coupon {
	tb.Helper()
	cp, err := c.Coupons.GetCoupon(context.Background(), &couponv1.GetCouponRequest{UserId: userID, CouponCode: code})
	if err != nil {
		tb.Fatalf("GetCoupon: %v", err)
	}
	return cp
}

// ledger returns the coupon's ledger ops, oldest first.
func (c *coupons) ledger(tb testing.TB, code string) []string {
	tb.Helper()
	resp, err := c.Admin.LookupCoupons(context.Background(), &couponv1.LookupCouponsRequest{CouponCode: code})
	if err != nil {
		tb.Fatalf("LookupCoupons: %v", err)
	}
	var ops []string
	for _, r := range resp.GetRecords() {
		for _, l := range r.GetLedger() {
			ops = append(ops, l.GetOp())
		}
	}
	return ops
}
