package rpc_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestPerCallerRateLimit(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) { c.RateLimit = app.RateLimit{PerCaller: 0.001, Burst: 2} })
	call := func(caller string) error {
		ctx := metadata.AppendToOutgoingContext(ctxT(t), app.CallerHeader, caller)
		_, err := srv.Coupons.GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: 1})
		return err
	}
	for i := range 2 {
		if code, _ := reasonOf(call("shop")); code != codes.NotFound {
			t.Fatalf("call %d within the burst: code %s, want NotFound (served)", i, code)
		}
	}
	wantErr(t, call("shop"), codes.ResourceExhausted, "RATE_LIMITED")
	if code, _ := reasonOf(call("other-team")); code != codes.NotFound {
		t.Fatalf("another caller was limited too: code %s", code)
	}
}
