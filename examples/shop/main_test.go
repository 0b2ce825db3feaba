package shop_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/dtm-labs/logger"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/examples/shop"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/freeport"
	"github.com/opencoupon/coupon/internal/testenv"
)

func TestMain(m *testing.M) {
	logger.InitLog("error")
	os.Exit(m.Run())
}

// env is a shop serving on a free port over two fresh databases.
type env struct {
	Addr       string
	OrderDSN   string
	PaymentDSN string
	OrderDB    *sql.DB
	PaymentDB  *sql.DB
	Orders     shopv1.OrderServiceClient
	Payments   shopv1.PaymentServiceClient
	Server     *shop.OrderServer
}

// mustStart starts a shop whose order service uses the DTM server dtm and
// the coupon service coupon (addresses; either may be unreachable).
func mustStart(tb testing.TB, dtm, coupon string) *env {
	tb.Helper()
	e := mustDatabases(tb)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	e.Addr = lis.Addr().String()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e.Server = shop.NewOrderServer(e.OrderDB, shop.OrderConfig{
		DTM: dtm, Coupon: coupon, Token: auth.DevTokenShop, Branch: coupontest.Signer(), Payment: e.Addr, Self: e.Addr, Timeout: 5 * time.Second,
	}, log)
	tb.Cleanup(func() { _ = e.Server.Close() })
	gs := shop.NewGRPCServer(log, e.Server, shop.NewPaymentServer(e.PaymentDB))
	go func() { _ = gs.Serve(lis) }()
	tb.Cleanup(gs.Stop)
	e.dial(tb, e.Addr)
	return e
}

// mustDatabases migrates (twice: it must be idempotent) and opens a fresh
// order and payment database.
func mustDatabases(tb testing.TB) *env {
	tb.Helper()
	ctx := context.Background()
	name := testenv.Unique(tb)
	e := &env{OrderDSN: testenv.MustDatabase(tb, name+"_order"), PaymentDSN: testenv.MustDatabase(tb, name+"_payment")}
	for _, d := range []struct {
		dsn, role string
		db        **sql.DB
	}{{e.OrderDSN, shop.OrderDB, &e.OrderDB}, {e.PaymentDSN, shop.PaymentDB, &e.PaymentDB}} {
		if err := shop.Migrate(ctx, d.dsn, d.role); err != nil {
			tb.Fatal(err)
		}
		if err := shop.Migrate(ctx, d.dsn, d.role); err != nil {
			tb.Fatalf("second migration: %v", err)
		}
		db, err := shop.Open(ctx, d.dsn, 4)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = db.Close() })
		*d.db = db
	}
	return e
}

// dial connects e's clients to a shop at addr.
func (e *env) dial(tb testing.TB, addr string) {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	e.Addr = addr
	e.Orders = shopv1.NewOrderServiceClient(conn)
	e.Payments = shopv1.NewPaymentServiceClient(conn)
}

// unreachable returns a loopback address where nothing listens: a port
// below the ephemeral range that freeport reserved, so no one binds it.
func unreachable(tb testing.TB) string {
	tb.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// branchCtx carries the metadata DTM sends with a TCC branch call.
func branchCtx(ctx context.Context, gid, op string) context.Context {
	return barrierCtx(ctx, "tcc", gid, "01", op)
}

// barrierCtx carries the metadata DTM sends with a branch call of a
// transaction of transType: op is try, confirm or cancel (tcc), action or
// compensate (saga), action (msg), or msg with branch 00 (a message's
// back-check).
func barrierCtx(ctx context.Context, transType, gid, branchID, op string) context.Context {
	return metadata.AppendToOutgoingContext(ctx,
		"dtm-gid", gid, "dtm-trans_type", transType, "dtm-branch_id", branchID, "dtm-op", op, "dtm-dtm", "127.0.0.1:1")
}

// reason returns the code and ErrorInfo reason of a gRPC error.
func reason(err error) (codes.Code, string) {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), info.GetReason()
		}
	}
	return st.Code(), ""
}

func mustDeposit(tb testing.TB, e *env, userID, amount int64) {
	tb.Helper()
	if _, err := e.Payments.Deposit(context.Background(), &shopv1.DepositRequest{UserId: userID, Amount: amount}); err != nil {
		tb.Fatalf("Deposit(%d, %d): %v", userID, amount, err)
	}
}

func mustAccount(tb testing.TB, e *env, userID int64) (balance, frozen int64) {
	tb.Helper()
	a, err := e.Payments.GetAccount(context.Background(), &shopv1.GetAccountRequest{UserId: userID})
	if err != nil {
		tb.Fatalf("GetAccount(%d): %v", userID, err)
	}
	return a.GetBalance(), a.GetFrozen()
}

// paymentStatus returns the payment's status, or UNSPECIFIED when there is none.
func paymentStatus(tb testing.TB, e *env, orderNo string) shopv1.Payment_Status {
	tb.Helper()
	p, err := e.Payments.GetPayment(context.Background(), &shopv1.GetPaymentRequest{OrderNo: orderNo})
	if c, _ := reason(err); c == codes.NotFound {
		return shopv1.Payment_STATUS_UNSPECIFIED
	}
	if err != nil {
		tb.Fatalf("GetPayment(%s): %v", orderNo, err)
	}
	return p.GetStatus()
}
