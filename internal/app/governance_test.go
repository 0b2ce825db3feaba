package app_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/freeport"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestRateLimitByIdentity(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) {
		c.RateLimit = app.RateLimit{Limits: []app.Limit{
			{Identity: "app", Methods: []string{"CouponService/GetTemplate"}, RPS: 0.001, Burst: 2},
			{Role: "order", RPS: 0.001, Burst: 1},
		}}
	})
	ctx := ctxT(t)
	get := func(c couponv1.CouponServiceClient, ctx context.Context) error {
		_, err := c.GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: 1})
		return err
	}
	app1, app2 := srv.CouponsAs(coupontest.TokenApp), srv.CouponsAs(coupontest.TokenApp)
	for i := range 2 {
		if err := get(app1, ctx); status.Code(err) != codes.NotFound {
			t.Fatalf("call %d within the burst: %v, want NotFound (served)", i, err)
		}
	}
	// Another connection, and a made-up x-caller-id, are the same identity.
	err := get(app2, metadata.AppendToOutgoingContext(ctx, "x-caller-id", "someone-else"))
	wantRefused(t, "third GetTemplate as app", err, codes.ResourceExhausted, "RATE_LIMITED")
	_, ei := errorInfo(err)
	if d, perr := time.ParseDuration(ei.GetMetadata()["retry_delay"]); perr != nil || d <= 0 {
		t.Fatalf("retry_delay %q in ErrorInfo metadata %v: want a positive duration", ei.GetMetadata()["retry_delay"], ei.GetMetadata())
	}
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("RetryInfo %v: want a positive retry delay", retry)
	}
	// The app's other methods are not limited; the limit is per method.
	for range 3 {
		if _, err := app1.GetCoupon(ctx, &couponv1.GetCouponRequest{UserId: 1, CouponCode: "X"}); status.Code(err) == codes.ResourceExhausted {
			t.Fatalf("GetCoupon as app: %v, want it served", err)
		}
	}
	// The order role's limit applies to the shop, its branches included
	// (TestBranchCallsRateLimited); Confirm and Cancel answer Unavailable.
	shop := srv.CouponsAs(coupontest.TokenShop)
	if err := get(shop, ctx); status.Code(err) != codes.NotFound {
		t.Fatalf("first GetTemplate as shop: %v, want NotFound (served)", err)
	}
	wantRefused(t, "second GetTemplate as shop", get(shop, ctx), codes.ResourceExhausted, "RATE_LIMITED")
	br := &couponv1.CouponBranchRequest{UserId: 1, CouponCode: "X", Order: &couponv1.Order{OrderNo: "o"}}
	for name, call := range map[string]func() error{
		"ConsumeCoupon":   func() error { _, err := shop.ConsumeCoupon(ctx, br); return err },
		"UnlockCoupon":    func() error { _, err := shop.UnlockCoupon(ctx, br); return err },
		"UseCouponRevert": func() error { _, err := shop.UseCouponRevert(ctx, br); return err },
	} {
		if code := status.Code(call()); code == codes.ResourceExhausted || code == codes.Unavailable {
			t.Fatalf("first %s as shop was limited: %s", name, code)
		}
		wantRefused(t, "second "+name+" as shop", call(), codes.Unavailable, "RATE_LIMITED")
	}
	// Try is limited (a bucket per method): one in the burst, then refused.
	if _, err := shop.LockCoupon(ctx, br); status.Code(err) == codes.ResourceExhausted {
		t.Fatalf("first LockCoupon as shop: %v, want it served", err)
	}
	_, err = shop.LockCoupon(ctx, br)
	wantRefused(t, "second LockCoupon as shop", err, codes.ResourceExhausted, "RATE_LIMITED")
}

// TestDeadlineOnSlowDependency pauses a Redis of the test's own: a claim
// still ends at the server-side deadline, long before the client's
// deadline or Redis's read timeout would end it, and health reports
// NOT_SERVING until Redis answers again.
func TestDeadlineOnSlowDependency(t *testing.T) {
	redis := startRedis(t)
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Redis.Addrs = []string{redis.addr}
		c.Redis.ReadTimeout, c.Redis.WriteTimeout = time.Minute, time.Minute
		c.Deadlines.User = 300 * time.Millisecond
		c.ReadinessInterval = 100 * time.Millisecond
	})
	tpl := template(t, srv, 100)
	claim(t, srv, tpl.Id, 42) // warm: the template is cached, connections open
	health := healthpb.NewHealthClient(srv.Dial(t))
	serving := func(want healthpb.HealthCheckResponse_ServingStatus) func() bool {
		return func() bool {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, err := health.Check(cctx, &healthpb.HealthCheckRequest{Service: "coupon.v1.CouponService"})
			return err == nil && r.Status == want
		}
	}
	testenv.Eventually(t, 10*time.Second, "health SERVING", serving(healthpb.HealthCheckResponse_SERVING))

	redis.signal(t, syscall.SIGSTOP)
	stopped := true
	t.Cleanup(func() {
		if stopped {
			redis.signal(t, syscall.SIGCONT)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	_, err := srv.Coupons.ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: "slow-1", UserId: 43, TemplateId: tpl.Id})
	took := time.Since(began)
	if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Unavailable {
		t.Fatalf("claim with Redis paused: %v, want DeadlineExceeded or Unavailable", err)
	}
	// Nothing but the 300 ms server deadline ends the call before a minute.
	if took > 20*time.Second {
		t.Fatalf("claim with Redis paused took %s: the server-side deadline did not bound it", took)
	}
	testenv.Eventually(t, 20*time.Second, "health NOT_SERVING with Redis paused", serving(healthpb.HealthCheckResponse_NOT_SERVING))
	if code := readyz(t, srv); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with Redis paused: %d, want 503", code)
	}
	redis.signal(t, syscall.SIGCONT)
	stopped = false
	testenv.Eventually(t, 20*time.Second, "health SERVING again", serving(healthpb.HealthCheckResponse_SERVING))
	if code := readyz(t, srv); code != http.StatusOK {
		t.Fatalf("/readyz with Redis back: %d, want 200", code)
	}
	claim(t, srv, tpl.Id, 44)
}

// TestRedisDown kills a Redis of the test's own: the cached template is
// still read from memory, claims fail with Unavailable rather than going on
// to MySQL, no coupon is written, and claims work again once Redis is back
// (its counters rebuilt from MySQL).
func TestRedisDown(t *testing.T) {
	redis := startRedis(t)
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Redis.Addrs = []string{redis.addr}
		c.ReadinessInterval = 100 * time.Millisecond
	})
	tpl := template(t, srv, 100)
	claim(t, srv, tpl.Id, 42)
	ctx := ctxT(t)
	redis.kill(t)
	if _, err := srv.Coupons.GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: tpl.Id}); err != nil {
		t.Fatalf("GetTemplate with Redis down: %v, want it served from memory", err)
	}
	for i := range 20 {
		_, err := srv.Coupons.ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("down-%d", i), UserId: 43, TemplateId: tpl.Id})
		wantRefused(t, "claim with Redis down", err, codes.Unavailable, "UNAVAILABLE")
	}
	list, err := srv.Coupons.ListUserCoupons(ctx, &couponv1.ListUserCouponsRequest{UserId: 43})
	if err != nil || len(list.Coupons) != 0 {
		t.Fatalf("user 43's coupons after refused claims = %v, %v; want none", list.GetCoupons(), err)
	}
	redis.restart(t)
	testenv.Eventually(t, 20*time.Second, "a claim to succeed with Redis back", func() bool {
		_, err := srv.Coupons.ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: "back-1", UserId: 43, TemplateId: tpl.Id})
		return err == nil
	})
}

func readyz(t *testing.T, srv *coupontest.Server) int {
	t.Helper()
	resp, err := http.Get("http://" + srv.OpsAddr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// redisServer is a redis-server of the test's own, on a free port with
// nothing on disk.
type redisServer struct {
	addr string
	bin  string
	dir  string
	cmd  *exec.Cmd
}

func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not installed (deploy/local/deps.sh installs it): %v", err)
	}
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	r := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), bin: bin, dir: t.TempDir()}
	t.Cleanup(func() { r.stop() })
	r.restart(t)
	return r
}

// restart starts the server (again, empty) on its port.
func (r *redisServer) restart(t *testing.T) {
	t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	r.cmd = exec.Command(r.bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "private redis-server answering", func() bool {
		c, err := net.DialTimeout("tcp", r.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (r *redisServer) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT)
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// kill stops the server with SIGKILL: its data is gone.
func (r *redisServer) kill(t *testing.T) {
	t.Helper()
	r.stop()
}

func (r *redisServer) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal redis-server: %v", err)
	}
}

// TestRequestBucketsBornWhileServing: the service gives every request
// bucket its birth time while it serves (not at the bucket's first claim),
// and again after Redis lost them, so that templates created afterwards
// are refused when sold out without a replay read.
func TestRequestBucketsBornWhileServing(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) { c.ReadinessInterval = 100 * time.Millisecond })
	rdb := srv.App.Redis()
	born := func() bool {
		keys, err := rdb.Keys(ctxT(t), srv.Prefix+"req:*:born").Result()
		return err == nil && len(keys) == 64
	}
	testenv.Eventually(t, 10*time.Second, "64 request buckets born", born)
	testenv.DeleteKeys(t, rdb, srv.Prefix+"req:")
	testenv.Eventually(t, 10*time.Second, "64 request buckets born again after the loss", born)
}
