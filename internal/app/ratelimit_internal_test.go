package app

import (
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestRateResolution(t *testing.T) {
	l := newLimiter(RateLimit{PerCaller: 5, Burst: 10, Limits: []Limit{
		{Role: "app", RPS: 100, Burst: 200},
		{Role: "order", RPS: 300, Burst: 300},
		{Role: "app", Methods: []string{"CouponService/ClaimCoupon"}, RPS: 50, Burst: 50},
		{Identity: "mobile", RPS: 1000, Burst: 1000},
		{Identity: "mobile", Methods: []string{"/coupon.v1.CouponService/ClaimCoupon"}, RPS: 0},
	}})
	claim, get := couponv1.CouponService_ClaimCoupon_FullMethodName, couponv1.CouponService_GetTemplate_FullMethodName
	try, cancel := couponv1.CouponService_LockCoupon_FullMethodName, couponv1.CouponService_UnlockCoupon_FullMethodName
	tests := []struct {
		name      string
		caller    participant.Caller
		method    string
		rps       float64
		wantBurst int
	}{
		{"default for an unknown caller", participant.Caller{Identity: "ip:10.0.0.1"}, get, 5, 10},
		{"role", participant.Caller{Identity: "web", Roles: []string{"app"}}, get, 100, 200},
		{"role and method", participant.Caller{Identity: "web", Roles: []string{"app"}}, claim, 50, 50},
		{"most generous role", participant.Caller{Identity: "both", Roles: []string{"app", "order"}}, get, 300, 300},
		{"identity over role", participant.Caller{Identity: "mobile", Roles: []string{"app"}}, get, 1000, 1000},
		{"identity and method: unlimited", participant.Caller{Identity: "mobile", Roles: []string{"app"}}, claim, 0, 0},
		{"branch default: Try", participant.Caller{Identity: "ip:10.0.0.1"}, try, DefaultBranchRPS, DefaultBranchBurst},
		{"branch default: Cancel", participant.Caller{Identity: "ip:10.0.0.1"}, cancel, DefaultBranchRPS, DefaultBranchBurst},
		{"role over the branch default", participant.Caller{Identity: "shop", Roles: []string{"order"}}, cancel, 300, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rps, burst := l.rateFor(tt.caller, tt.method)
			if rps != tt.rps || burst != tt.wantBurst {
				t.Fatalf("rateFor = %v/%d, want %v/%d", rps, burst, tt.rps, tt.wantBurst)
			}
		})
	}
}

func TestBranchRateOff(t *testing.T) {
	l := newLimiter(RateLimit{Branch: -1})
	if rps, _ := l.rateFor(participant.Caller{Identity: "shop"}, couponv1.CouponService_LockCoupon_FullMethodName); rps != 0 {
		t.Fatalf("branch rate with Branch -1 = %v, want 0 (unlimited)", rps)
	}
}

func TestDeadlineFor(t *testing.T) {
	d := Deadlines{Admin: -1, Methods: map[string]time.Duration{"couponservice/claimcoupon": time.Second}}
	tests := []struct {
		method string
		want   time.Duration
	}{
		{couponv1.CouponService_GetTemplate_FullMethodName, DefaultUserDeadline},
		{couponv1.CouponService_ClaimCoupon_FullMethodName, time.Second},
		{couponv1.CouponService_ConsumeCoupon_FullMethodName, DefaultBranchDeadline},
		{couponv1.AdminService_ListCampaigns_FullMethodName, 0},
	}
	for _, tt := range tests {
		if got := d.deadlineFor(tt.method); got != tt.want {
			t.Errorf("deadlineFor(%s) = %s, want %s", tt.method, got, tt.want)
		}
	}
}
