package rpc_test

import (
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Two replicas share the databases and Redis: an admin change made through
// one reaches the other's in-memory template cache within the refresh bound.
func TestTemplateChangeReachesOtherReplica(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 100, 0)
	replica := start(t, func(c *app.Config) {
		c.MySQL = f.srv.Config.MySQL
		c.Redis = f.srv.Config.Redis
		c.NodeID = 2
		c.Service.TemplateRefresh = 200 * time.Millisecond
	})
	// The replica caches the template by serving a claim.
	if _, err := replica.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "rep-1", UserId: 1, TemplateId: tpl.Id}); err != nil {
		t.Fatalf("claim on the replica: %v", err)
	}
	if _, err := f.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, Status: couponv1.CouponTemplate_PAUSED}); err != nil {
		t.Fatalf("pause on the first replica: %v", err)
	}
	n := 0
	testenv.Eventually(t, 5*time.Second, "the pause to reach the replica", func() bool {
		n++
		_, err := replica.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "rep-wait-" + string(rune('a'+n%26)) + time.Now().Format("150405.000000"), UserId: int64(10 + n), TemplateId: tpl.Id})
		_, reason := reasonOf(err)
		return reason == "TEMPLATE_NOT_ACTIVE"
	})
}
