package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/freeport"
	"github.com/opencoupon/coupon/internal/testenv"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSIGTERMUnderClaimLoad runs the real binary with the local stack's
// config file (overridden by environment), sends it SIGTERM while clients
// claim, and finds every claim it acknowledged in MySQL: shutdown drains
// the calls in flight and writes the claim batches before it exits 0.
func TestSIGTERMUnderClaimLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "coupon")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	name := testenv.Unique(t)
	mainDSN := testenv.MustDatabase(t, name+"_main")
	shards := []string{testenv.MustDatabase(t, name+"_s0"), testenv.MustDatabase(t, name+"_s1")}
	prefix := name + ":"
	testenv.MustRedis(t, prefix)
	callers, err := json.Marshal(auth.DevCallers())
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr, opsAddr, httpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	env := append(os.Environ(),
		"COUPON_GRPC_ADDR="+grpcAddr, "COUPON_OPS_ADDR="+opsAddr, "COUPON_HTTP_ADDR="+httpAddr,
		"COUPON_MYSQL_MAIN_DSN="+mainDSN, "COUPON_MYSQL_SHARD_DSNS="+strings.Join(shards, ","),
		"COUPON_MYSQL_TABLES_PER_SHARD=4", "COUPON_MYSQL_MAX_OPEN_CONNS=8", "COUPON_MYSQL_MAX_IDLE_CONNS=8",
		"COUPON_REDIS_ADDRS="+testenv.RedisAddr(), "COUPON_REDIS_KEY_PREFIX="+prefix, "COUPON_REDIS_POOL_SIZE=32",
		"COUPON_AUTH_CALLERS="+string(callers), // the same callers as the file, through the environment
		"COUPON_DEADLINE_USER=10s",             // a loaded test machine, not the 500 ms default
		"COUPON_LOG_LEVEL=info",
	)
	run := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, append(args, "--config", "../../deploy/local/coupon.yaml")...)
		cmd.Env = env
		return cmd
	}
	if out, err := run("migrate").CombinedOutput(); err != nil {
		t.Fatalf("coupon migrate: %v\n%s", err, out)
	}
	logs := &testenv.Buffer{}
	srv := run("serve")
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})
	testenv.Eventually(t, 60*time.Second, "the service ready on /readyz", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("coupon serve exited before it was ready: %v", err)
		default:
		}
		resp, err := http.Get("http://" + opsAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(auth.DevTokens().Interceptor()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin, coupons := couponv1.NewAdminServiceClient(conn), couponv1.NewCouponServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := time.Now()
	camp, err := admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{Name: "sigterm", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(time.Hour))})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	tpl, err := admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{CampaignId: camp.Id, Name: "sigterm", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 100, TotalStock: 1_000_000, PerUserLimit: 1_000, CreatedBy: "alice",
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(time.Hour))})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if _, err := admin.ApproveTemplate(auth.AsToken(ctx, auth.DevTokenBob), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion(), ApprovedBy: "bob"}); err != nil {
		t.Fatalf("ApproveTemplate: %v", err)
	}

	type ack struct {
		user int64
		code string
	}
	var (
		mu     sync.Mutex
		acked  []ack
		signal = make(chan struct{})
		once   sync.Once
	)
	const clients, signalAfter = 16, 150
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			user := int64(10_000 + c)
			for i := 0; ; i++ {
				x, err := coupons.ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("sig-%d-%d", c, i), UserId: user, TemplateId: tpl.Id})
				if err != nil {
					return // the service stopped taking calls
				}
				mu.Lock()
				acked = append(acked, ack{user, x.Code})
				if len(acked) == signalAfter {
					once.Do(func() { close(signal) })
				}
				mu.Unlock()
			}
		})
	}
	select {
	case <-signal:
	case err := <-exited:
		t.Fatalf("service exited under load: %v", err)
	case <-ctx.Done():
		t.Fatal("no claims acknowledged")
	}
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("service after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("service still running 60s after SIGTERM")
	}
	wg.Wait()

	store, err := couponmysql.Open(ctx, couponmysql.Config{MainDSN: mainDSN, ShardDSNs: shards, TablesPerShard: 4, MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < signalAfter {
		t.Fatalf("only %d claims acknowledged", len(acked))
	}
	for _, a := range acked {
		if c, err := store.Coupons.ByCode(ctx, a.user, a.code); err != nil || c.Code != a.code {
			t.Errorf("acknowledged coupon %s of user %d not in MySQL after shutdown: %v", a.code, a.user, err)
		}
	}
	out := logs.String()
	for _, secret := range []string{auth.DevTokenAlice, auth.DevTokenBob, auth.DevTokenApp, auth.DevTokenShop} {
		if strings.Contains(out, secret) {
			t.Errorf("the service log contains the token %s", secret)
		}
	}
	if !strings.Contains(out, "calls drained") {
		t.Errorf("the service log does not say it drained its calls")
	}
	t.Logf("%d claims acknowledged, all found after SIGTERM", len(acked))
}
