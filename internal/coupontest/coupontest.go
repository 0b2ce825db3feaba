// Package coupontest starts a real coupon service for integration tests:
// its own main and shard databases on the test MariaDB, its own Redis key
// prefix, and a gRPC server on a free loopback port, all removed when the
// test ends.
package coupontest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Server is a running coupon service.
type Server struct {
	App     *app.App
	Config  app.Config
	Addr    string
	Conn    *grpc.ClientConn
	Admin   couponv1.AdminServiceClient
	Coupons couponv1.CouponServiceClient
	// Prefix is the Redis key prefix of this server.
	Prefix string
}

// Option changes the configuration before the server starts.
type Option func(*app.Config)

// Start migrates fresh databases and serves the coupon service until the
// test ends. Shards: 2 databases × 4 tables unless an option says otherwise.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	name := testenv.Unique(tb)
	cfg := app.Config{
		GRPCAddr: "127.0.0.1:0",
		NodeID:   1,
		MySQL: couponmysql.Config{
			MainDSN:        testenv.MustDatabase(tb, name+"_main"),
			ShardDSNs:      []string{testenv.MustDatabase(tb, name+"_s0"), testenv.MustDatabase(tb, name+"_s1")},
			TablesPerShard: 4,
			MaxOpenConns:   16,
		},
		Redis:   app.RedisConfig{Addrs: []string{testenv.RedisAddr()}, Prefix: name + ":", PoolSize: 64},
		Service: participant.Config{ClaimWriteTimeout: 2 * time.Second, StockSettle: 2500 * time.Millisecond},
	}
	for _, o := range opts {
		o(&cfg)
	}
	rdb := testenv.MustRedis(tb, cfg.Redis.Prefix) // cleans the prefix afterwards
	_ = rdb
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Migrate(ctx, cfg.MySQL); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	level := slog.LevelWarn
	if os.Getenv("COUPON_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	a, err := app.Open(ctx, cfg, log)
	if err != nil {
		tb.Fatalf("open app: %v", err)
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeListeners(sctx, lis, nil) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	tb.Cleanup(func() {
		conn.Close()
		stop()
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
		a.Close()
	})
	return &Server{
		App: a, Config: cfg, Addr: lis.Addr().String(), Conn: conn,
		Admin: couponv1.NewAdminServiceClient(conn), Coupons: couponv1.NewCouponServiceClient(conn),
		Prefix: cfg.Redis.Prefix,
	}
}
