// Package coupontest starts a real coupon service for integration tests:
// its own main and shard databases on the test MariaDB, its own Redis key
// prefix, a gRPC server and the ops HTTP server on free loopback ports, all
// removed when the test ends.
//
// Authentication is on with the four development callers of the local
// stack (alice and bob: admin; app: app; shop: order). The clients Start
// returns send the right development token per call: alice's for
// AdminService, the shop's for branch methods, the app's otherwise. AsToken
// and WithoutToken change that per call; AdminAs and CouponsAs give clients
// that always call as one token.
package coupontest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// The development tokens (deploy/local/coupon.yaml).
const (
	TokenAlice = auth.DevTokenAlice // identity alice, admin
	TokenBob   = auth.DevTokenBob   // identity bob, admin
	TokenApp   = auth.DevTokenApp   // identity app, app
	TokenShop  = auth.DevTokenShop  // identity shop, order
)

// Server is a running coupon service.
type Server struct {
	App    *app.App
	Config app.Config
	Addr   string
	// OpsAddr serves /healthz, /readyz and /metrics.
	OpsAddr string
	// Conn sends the development token that fits each method. With TLS
	// configured it cannot connect: use Dial with TLS credentials.
	Conn    *grpc.ClientConn
	Admin   couponv1.AdminServiceClient
	Coupons couponv1.CouponServiceClient
	// Prefix is the Redis key prefix of this server.
	Prefix string

	tb testing.TB
}

// Option changes the configuration before the server starts.
type Option func(*app.Config)

// WithoutAuth turns authentication off.
func WithoutAuth() Option { return func(c *app.Config) { c.Auth.Enabled = false } }

// Start migrates fresh databases and serves the coupon service until the
// test ends. Shards: 2 databases × 4 tables unless an option says otherwise.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	name := testenv.Unique(tb)
	cfg := app.Config{
		GRPCAddr: "127.0.0.1:0",
		OpsAddr:  "127.0.0.1:0",
		NodeID:   1,
		Auth:     auth.Config{Enabled: true, Callers: auth.DevCallers()},
		MySQL: couponmysql.Config{
			MainDSN:        testenv.MustDatabase(tb, name+"_main"),
			ShardDSNs:      []string{testenv.MustDatabase(tb, name+"_s0"), testenv.MustDatabase(tb, name+"_s1")},
			TablesPerShard: 4,
			MaxOpenConns:   8,
		},
		Redis:   app.RedisConfig{Addrs: []string{testenv.RedisAddr()}, Prefix: name + ":", PoolSize: 64},
		Service: participant.Config{ClaimWriteTimeout: 2 * time.Second, StockSettle: 2500 * time.Millisecond},
		// Tests run on a loaded 2-core machine; the default 500 ms would
		// make user-side calls flaky under -race.
		Deadlines: app.Deadlines{User: 10 * time.Second, Branch: 10 * time.Second, Admin: 30 * time.Second},
	}
	for _, o := range opts {
		o(&cfg)
	}
	testenv.MustRedis(tb, cfg.Redis.Prefix) // cleans the prefix afterwards
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Migrate(ctx, cfg.MySQL); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	a, err := app.Open(ctx, cfg, Logger())
	if err != nil {
		tb.Fatalf("open app: %v", err)
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	var ops net.Listener
	if cfg.OpsAddr != "" {
		if ops, err = net.Listen("tcp", cfg.OpsAddr); err != nil {
			tb.Fatalf("listen ops: %v", err)
		}
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeListeners(sctx, lis, ops) }()
	s := &Server{App: a, Config: cfg, Addr: lis.Addr().String(), Prefix: cfg.Redis.Prefix, tb: tb}
	if ops != nil {
		s.OpsAddr = ops.Addr().String()
	}
	s.Conn = s.Dial(tb, grpc.WithUnaryInterceptor(auth.DevTokens().Interceptor()))
	s.Admin, s.Coupons = couponv1.NewAdminServiceClient(s.Conn), couponv1.NewCouponServiceClient(s.Conn)
	tb.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
		a.Close()
	})
	return s
}

// Logger is the log of test services: warnings only, unless
// COUPON_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("COUPON_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// Dial opens a connection to the server that the test closes at its end.
// Without options it is plaintext and sends no credential.
func (s *Server) Dial(tb testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(s.Addr, opts...)
	if err != nil {
		tb.Fatalf("dial %s: %v", s.Addr, err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// AdminAs is an AdminService client calling with token ("" sends none).
func (s *Server) AdminAs(token string) couponv1.AdminServiceClient {
	return couponv1.NewAdminServiceClient(s.connAs(token))
}

// CouponsAs is a CouponService client calling with token ("" sends none).
func (s *Server) CouponsAs(token string) couponv1.CouponServiceClient {
	return couponv1.NewCouponServiceClient(s.connAs(token))
}

func (s *Server) connAs(token string) *grpc.ClientConn {
	s.tb.Helper()
	t := auth.Tokens{Admin: token, App: token, Shop: token}
	return s.Dial(s.tb, grpc.WithUnaryInterceptor(t.Interceptor()))
}

// AsToken makes calls under ctx on Conn carry token instead of the default.
func AsToken(ctx context.Context, token string) context.Context { return auth.AsToken(ctx, token) }

// WithoutToken makes calls under ctx on Conn carry no credential.
func WithoutToken(ctx context.Context) context.Context { return auth.WithoutToken(ctx) }

// Signer signs branch credentials as the development shop.
func Signer() coupontcc.Signer { return coupontcc.Signer{Caller: "shop", Key: auth.DevBranchKey} }

// BranchHeaders are the DTM branch headers of the development shop for the
// transaction gid using the coupons in orders (coupontcc.OrderOf): set them
// on the global transaction (dtmgrpc.WithBranchHeaders,
// TransBase.BranchHeaders) and DTM sends the branch credential with every
// branch call. The Try needs the shop's token besides: AsShop.
func BranchHeaders(tb testing.TB, gid string, orders ...branchcred.Order) map[string]string {
	tb.Helper()
	h, err := coupontcc.BranchHeaders(Signer(), gid, orders...)
	if err != nil {
		tb.Fatalf("branch headers: %v", err)
	}
	return h
}

// AsShop makes the calls under ctx through DTM's client (a TCC Try) carry
// the development shop's token, as an order service's Try does.
func AsShop(ctx context.Context) context.Context { return coupontcc.WithToken(ctx, TokenShop) }

// Metrics returns the server's /metrics page.
func (s *Server) Metrics(tb testing.TB) string {
	tb.Helper()
	if s.OpsAddr == "" {
		tb.Fatal("coupontest: the ops listener is off (Config.OpsAddr empty)")
	}
	resp, err := http.Get("http://" + s.OpsAddr + "/metrics")
	if err != nil {
		tb.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}
