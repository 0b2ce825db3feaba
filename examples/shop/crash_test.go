package shop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencoupon/coupon/client/branchcred"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/janitor"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestRefundSurvivesShopCrash kills the shop (the real binary, a child
// process, SIGKILL) after its refund's local transaction committed and
// before DTM heard the message's Submit. DTM's back-check (QueryPrepared,
// which it makes once the message is order.timeout old) then finds the
// commit on the restarted shop and runs the refund's branches: the payment
// and the coupon come back.
//
// The moment is made exact, not timed: the test holds the order row's lock
// so that the shop waits inside its local transaction, after Prepare
// reached DTM; then it stalls the shop's connection to DTM (a proxy) and
// lets the local transaction commit, so the Submit never arrives; then it
// kills the shop, well before the back-check is due (8s after Prepare).
func TestRefundSurvivesShopCrash(t *testing.T) {
	bin := shopBinary(t)
	dtm := dtmtest.Start(t)
	coupons := mustCoupons(t)
	tpl := coupons.mustTemplate(t, nil)
	e := mustDatabases(t)
	ctx := context.Background()
	toDTM := testenv.StartProxy(t, dtm.GRPCAddr)
	addr := unreachable(t)
	env := []string{
		"COUPON_SHOP_GRPC_ADDR=" + addr, "COUPON_SHOP_GRPC_ADVERTISE=" + addr, "COUPON_SHOP_PAYMENT_TARGET=" + addr,
		"COUPON_SHOP_COUPON_TARGET=" + coupons.Addr, "COUPON_SHOP_COUPON_TOKEN=" + coupontest.TokenShop, "COUPON_SHOP_COUPON_BRANCH_KEYS=" + branchKeysJSON(t), "COUPON_SHOP_DTM_HTTP=" + dtm.HTTPAddr,
		"COUPON_SHOP_ORDER_DSN=" + e.OrderDSN, "COUPON_SHOP_PAYMENT_DSN=" + e.PaymentDSN, "COUPON_SHOP_DB_MAX_CONNS=4",
		"COUPON_SHOP_ORDER_TIMEOUT=8s", "COUPON_SHOP_ORDER_SWEEP_INTERVAL=0", "COUPON_SHOP_BARRIER_INTERVAL=0", "COUPON_SHOP_LOG_LEVEL=warn", "LOG_LEVEL=WARN",
	}
	first := startShop(t, bin, append(env, "COUPON_SHOP_DTM_GRPC="+toDTM.Addr))
	e.dial(t, addr)

	mustDeposit(t, e, 1, 10000)
	req := newOrder("crash-1", 1, 6000)
	req.CouponCode = coupons.mustClaim(t, tpl, 1)
	o, err := e.Orders.CreateOrder(ctx, req)
	if err != nil || o.GetStatus() != shopv1.Order_PAID {
		t.Fatalf("CreateOrder = %v, %v; want PAID", o, err)
	}

	lock, err := e.OrderDB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.ExecContext(ctx, `SELECT id FROM orders WHERE order_no = ? FOR UPDATE`, o.GetOrderNo()); err != nil {
		t.Fatal(err)
	}
	refundDone := make(chan struct{})
	go func() {
		defer close(refundDone)
		// The shop dies under this call; its error is expected.
		_, _ = e.Orders.RefundOrder(ctx, &shopv1.RefundOrderRequest{OrderNo: o.GetOrderNo(), Reason: "crash test"})
	}()
	testenv.Eventually(t, 30*time.Second, "the refund's local transaction waiting for the order row", func() bool {
		// The shop runs its local transaction's locking read, so it is past
		// Prepare. (INNODB_TRX does not reliably list a transaction waiting
		// in this read on MariaDB 10.11; the process list does.)
		var n int
		err := e.OrderDB.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
			WHERE db = DATABASE() AND id <> CONNECTION_ID() AND info LIKE CONCAT('%FROM orders WHERE order_no = ''', ?, '''%FOR UPDATE%')`, o.GetOrderNo()).Scan(&n)
		return err == nil && n == 1
	})
	t.Log("the refund waits for the order row; stalling the shop's connection to DTM")
	toDTM.Stall()
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	var gid string
	testenv.Eventually(t, 30*time.Second, "the refund's local commit", func() bool {
		r, err := e.Orders.GetOrder(ctx, &shopv1.GetOrderRequest{OrderNo: o.GetOrderNo()})
		gid = r.GetRefundGid()
		return err == nil && r.GetStatus() == shopv1.Order_REFUNDED
	})
	t.Logf("refund %s committed; killing the shop", gid)
	first.kill(t)
	<-refundDone

	status := janitor.CoordinatorStatus(dtm.HTTPAddr, nil)
	if st, err := status(ctx, gid); err != nil || st != "prepared" {
		t.Fatalf("refund %s after the crash: %q, %v; want prepared (its Submit never reached DTM)", gid, st, err)
	}

	startShop(t, bin, append(env, "COUPON_SHOP_DTM_GRPC="+dtm.GRPCAddr))
	if got := paymentStatus(t, e, o.GetOrderNo()); got != shopv1.Payment_CAPTURED {
		t.Fatalf("payment after the crash = %v; want CAPTURED still", got)
	}
	t.Log("shop restarted; waiting for DTM's back-check")
	testenv.Eventually(t, 60*time.Second, "the refund finished by DTM's back-check", func() bool {
		st, err := status(ctx, gid)
		return err == nil && st == janitor.StatusSucceed
	})
	if got := paymentStatus(t, e, o.GetOrderNo()); got != shopv1.Payment_REFUNDED {
		t.Errorf("payment = %v; want REFUNDED", got)
	}
	if b, f := mustAccount(t, e, 1); b != 10000 || f != 0 {
		t.Errorf("account = %d/%d; want 10000/0", b, f)
	}
	if c := coupons.coupon(t, 1, req.GetCouponCode()); c.GetStatus() != couponv1.Coupon_AVAILABLE {
		t.Errorf("coupon = %v; want AVAILABLE", c.GetStatus())
	}
	if got, want := coupons.ledger(t, req.GetCouponCode()), []string{"LOCK", "CONSUME", "RETURN"}; !slices.Equal(got, want) {
		t.Errorf("ledger = %v; want %v", got, want)
	}
}

// shopProcess is a shop binary running as a child process.
type shopProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	logs *testenv.Buffer
}

// startShop runs the shop binary with env and waits until it is healthy;
// the test kills it at its end.
func startShop(tb testing.TB, bin string, env []string) *shopProcess {
	tb.Helper()
	ops := unreachable(tb)
	p := &shopProcess{cmd: exec.Command(bin, "serve"), done: make(chan struct{}), logs: &testenv.Buffer{}}
	p.cmd.Env = append(os.Environ(), append(env, "COUPON_SHOP_OPS_ADDR="+ops)...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start shop: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		p.kill(tb)
		if tb.Failed() {
			tb.Logf("shop logs:\n%s", p.logs.String())
		}
	})
	client := &http.Client{Timeout: time.Second}
	testenv.Eventually(tb, 60*time.Second, "the shop healthy", func() bool {
		select {
		case <-p.done:
			tb.Fatalf("shop exited: %v\n%s", p.cmd.ProcessState, p.logs.String())
		default:
		}
		resp, err := client.Get("http://" + ops + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// kill sends SIGKILL, as a crash would, and waits for the process to go.
func (p *shopProcess) kill(tb testing.TB) {
	tb.Helper()
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

var shopBuild struct {
	once sync.Once
	path string
	err  error
}

// shopBinary builds ./examples/shop/cmd/shop once per test binary.
func shopBinary(tb testing.TB) string {
	tb.Helper()
	shopBuild.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			shopBuild.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		// Under go test, beside the test binary in the go command's work
		// directory, which go test removes afterwards.
		parent := ""
		if exe, err := os.Executable(); err == nil && strings.Contains(exe, "go-build") {
			parent = filepath.Dir(exe)
		}
		dir, err := os.MkdirTemp(parent, "shoptest-")
		if err != nil {
			shopBuild.err = err
			return
		}
		shopBuild.path = filepath.Join(dir, "shop")
		cmd := exec.Command("go", "build", "-o", shopBuild.path, "./examples/shop/cmd/shop")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if out, err := cmd.CombinedOutput(); err != nil {
			shopBuild.err = fmt.Errorf("go build ./examples/shop/cmd/shop: %w\n%s", err, out)
		}
	})
	if shopBuild.err != nil {
		tb.Fatal(shopBuild.err)
	}
	return shopBuild.path
}

// branchKeysJSON is the development shop's branch key as the shop reads it
// from the environment.
func branchKeysJSON(t *testing.T) string {
	t.Helper()
	b, err := json.Marshal([]branchcred.Key{coupontest.Signer().Key})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
