package rpc_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// startCluster starts the project's local 3-master Redis Cluster on its own
// ports and stops it when the test ends.
func startCluster(t *testing.T, base int) []string {
	t.Helper()
	needsServices(t)
	script := "../../deploy/local/redis-cluster.sh"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, "start", fmt.Sprint(base)).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("start redis cluster: %v\n%s", err, stderr)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", fmt.Sprint(base)).CombinedOutput(); err != nil {
			t.Errorf("stop redis cluster: %v\n%s", err, out)
		}
	})
	return strings.Split(strings.TrimSpace(string(out)), ",")
}

func TestHotTemplateOnRedisCluster(t *testing.T) {
	seeds := startCluster(t, 7101)
	srv := start(t, func(c *app.Config) {
		c.Redis = app.RedisConfig{Addrs: seeds, Cluster: true, Prefix: c.Redis.Prefix, PoolSize: 64}
	})
	f := &fixture{srv: srv}
	now := time.Now()
	camp, err := srv.Admin.CreateCampaign(ctxT(t), &couponv1.CreateCampaignRequest{Name: "hot", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	f.campaign = camp
	tpl, err := srv.Admin.CreateTemplate(ctxT(t), &couponv1.CreateTemplateRequest{
		CampaignId: camp.Id, Name: "hot", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 100,
		TotalStock: 300, SubStockCount: 8, ValidFrom: timestamppb.New(now.Add(-time.Minute)),
		ValidUntil: timestamppb.New(now.Add(time.Hour)), CreatedBy: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion()}); err != nil {
		t.Fatal(err)
	}
	// The template's sub-keys spread over more than one master.
	cc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: seeds})
	defer cc.Close()
	masters := map[string]bool{}
	for i := range 8 {
		key := fmt.Sprintf("%sstock:{%d.%d}", srv.Prefix, tpl.Id, i)
		slot, err := cc.ClusterKeySlot(ctxT(t), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		slots, err := cc.ClusterSlots(ctxT(t)).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) {
				masters[s.Nodes[0].Addr] = true
			}
		}
	}
	if len(masters) < 2 {
		t.Fatalf("8 sub-keys live on %d master(s), want them spread", len(masters))
	}
	reasons, got := claimAll(t, srv.Coupons, 500, func(i int) *couponv1.ClaimCouponRequest {
		return &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("hot-%d", i), UserId: int64(5000 + i), TemplateId: tpl.Id}
	})
	if len(got) != 300 || reasons["FailedPrecondition/SOLD_OUT"] != 200 {
		t.Fatalf("got %d coupons and %v, want 300 and 200 SOLD_OUT", len(got), reasons)
	}
	if st := f.stats(t, tpl.Id); st.Issued != 300 || st.RemainingStock != 0 {
		t.Fatalf("stats = %+v, want issued 300, remaining 0", st)
	}
}
