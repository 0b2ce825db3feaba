package rpc_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/logger"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestMain(m *testing.M) {
	logger.InitLog("fatal") // the DTM client logs every call, and refusals at error
	os.Exit(m.Run())
}

// payment is a stand-in second participant served over real gRPC: each
// method answers as its knob says, so tests can fail Try, fail Confirm for a
// while, or hold Confirm until released.
type payment struct {
	addr         string
	failTry      atomic.Bool
	confirmFails atomic.Int32  // Unavailable this many more times
	hold         chan struct{} // Confirm waits on it when not nil
	calls        sync.Map      // method -> *atomic.Int32
}

func newPayment(t *testing.T) *payment {
	t.Helper()
	p := &payment{}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
			return err
		}
		n, _ := p.calls.LoadOrStore(method, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		switch method {
		case "/pay.Pay/Try":
			if p.failTry.Load() {
				return status.Error(codes.Aborted, "insufficient balance")
			}
		case "/pay.Pay/Confirm":
			if p.hold != nil {
				<-p.hold
			}
			if p.confirmFails.Add(-1) >= 0 {
				return status.Error(codes.Unavailable, "payment system down")
			}
		}
		return stream.SendMsg(&emptypb.Empty{})
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	p.addr = lis.Addr().String()
	return p
}

func (p *payment) count(method string) int32 {
	n, ok := p.calls.Load(method)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

type tccEnv struct {
	*fixture
	dtm *dtmtest.Coordinator
	pay *payment
	t   *testing.T
}

func newTCC(t *testing.T, opts ...dtmtest.Option) *tccEnv {
	t.Helper()
	f := newFixture(t)

	return &tccEnv{fixture: f, dtm: dtmtest.Start(t, opts...), pay: newPayment(t), t: t}
}

func (e *tccEnv) url(method string) string { return e.srv.Addr + "/coupon.v1.CouponService/" + method }

// tcc runs a global TCC transaction using the coupons of reqs as an order
// service does: its Trys carry the shop's token, and DTM's Confirms and
// Cancels the shop's branch credential for gid and those coupons.
func (e *tccEnv) tcc(gid string, reqs []*couponv1.CouponBranchRequest, fn func(*dtmgrpc.TccGrpc) error) error {
	orders := make([]branchcred.Order, len(reqs))
	for i, r := range reqs {
		orders[i] = coupontcc.OrderOf(r)
	}
	headers := coupontest.BranchHeaders(e.t, gid, orders...)
	return dtmgrpc.TccGlobalTransaction2(e.dtm.GRPCAddr, gid, func(tcc *dtmgrpc.TccGrpc) {
		tcc.Context = coupontest.AsShop(context.Background())
		tcc.BranchHeaders = headers
	}, fn)
}

// order runs one global TCC transaction: the coupon, then the payment.
func (e *tccEnv) order(gid string, user int64, code string, amount int64) (*couponv1.CouponBranchResponse, error) {
	req := &couponv1.CouponBranchRequest{UserId: user, CouponCode: code, Order: &couponv1.Order{
		OrderNo: "order-" + gid, UserId: user, Amount: amount, Currency: "CNY", ProductLine: "food"}}
	resp := &couponv1.CouponBranchResponse{}
	err := e.tcc(gid, []*couponv1.CouponBranchRequest{req}, func(tcc *dtmgrpc.TccGrpc) error {
		if err := tcc.CallBranch(req, e.url("LockCoupon"), e.url("ConsumeCoupon"), e.url("UnlockCoupon"), resp); err != nil {
			return err
		}
		return tcc.CallBranch(&emptypb.Empty{}, e.pay.addr+"/pay.Pay/Try", e.pay.addr+"/pay.Pay/Confirm", e.pay.addr+"/pay.Pay/Cancel", &emptypb.Empty{})
	})
	return resp, err
}

func (e *tccEnv) claim(t *testing.T, tplID, user int64) *couponv1.Coupon {
	t.Helper()
	c, err := e.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{
		RequestId: fmt.Sprintf("claim-%d-%d-%d", tplID, user, time.Now().UnixNano()), UserId: user, TemplateId: tplID})
	if err != nil {
		t.Fatalf("ClaimCoupon: %v", err)
	}
	return c
}

func (e *tccEnv) waitStatus(t *testing.T, user int64, code string, want couponv1.Coupon_Status) *couponv1.Coupon {
	t.Helper()
	var last *couponv1.Coupon
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("coupon %s to become %s (last %v)", code, want, &last), func() bool {
		c, err := e.srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: user, CouponCode: code})
		last = c
		return err == nil && c.Status == want
	})
	return last
}

// ledger counts the user's ledger rows by operation for one coupon.
func (e *tccEnv) ledger(t *testing.T, user int64, code string) map[string]int {
	t.Helper()
	db, _ := e.srv.App.Store().UserShardForTest(user)
	rows, err := db.QueryContext(ctxT(t), `SELECT op, COUNT(*) FROM coupon_ledger WHERE coupon_code = ? GROUP BY op`, code)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var op string
		var n int
		if err := rows.Scan(&op, &n); err != nil {
			t.Fatal(err)
		}
		out[op] = n
	}
	return out
}

func TestTCCSuccess(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0) // 500 off orders of at least 5000
	c := e.claim(t, tpl.Id, 11)
	resp, err := e.order("ok-1", 11, c.Code, 8000)
	if err != nil {
		t.Fatalf("global transaction: %v", err)
	}
	if resp.DiscountAmount != 500 || resp.PayableAmount != 7500 {
		t.Fatalf("Try answered discount %d payable %d, want 500 and 7500", resp.DiscountAmount, resp.PayableAmount)
	}
	got := e.waitStatus(t, 11, c.Code, couponv1.Coupon_USED)
	if got.OrderNo != "order-ok-1" || got.UsedAt == nil || got.DiscountAmount != 500 {
		t.Fatalf("used coupon = %+v, want order order-ok-1, used_at set, discount 500", got)
	}
	if l := e.ledger(t, 11, c.Code); l[participant.OpLock] != 1 || l[participant.OpConsume] != 1 || l[participant.OpRelease] != 0 {
		t.Fatalf("ledger = %v, want one LOCK and one CONSUME", l)
	}
}

func TestTCCPaymentFailsReleasesCoupon(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 12)
	e.pay.failTry.Store(true)
	if _, err := e.order("payfail-1", 12, c.Code, 8000); err == nil {
		t.Fatal("global transaction succeeded, want the payment's refusal")
	}
	e.waitStatus(t, 12, c.Code, couponv1.Coupon_AVAILABLE)
	testenv.Eventually(t, 30*time.Second, "RELEASE ledger row", func() bool {
		l := e.ledger(t, 12, c.Code)
		return l[participant.OpLock] == 1 && l[participant.OpRelease] == 1
	})
	// The released coupon serves the next order.
	e.pay.failTry.Store(false)
	if _, err := e.order("payfail-2", 12, c.Code, 8000); err != nil {
		t.Fatalf("second order: %v", err)
	}
	e.waitStatus(t, 12, c.Code, couponv1.Coupon_USED)
}

func TestTCCRuleNotMetAborts(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 13)
	_, err := e.order("rule-1", 13, c.Code, 4000) // below the 5000 threshold
	if err == nil {
		t.Fatal("global transaction succeeded, want RULE_NOT_MET")
	}
	if e.pay.count("/pay.Pay/Try") != 0 {
		t.Fatal("payment was tried after the coupon refused")
	}
	e.waitStatus(t, 13, c.Code, couponv1.Coupon_AVAILABLE)
	if l := e.ledger(t, 13, c.Code); len(l) != 0 {
		t.Fatalf("ledger = %v, want nothing written", l)
	}
}

func TestTCCConfirmRetriedAfterTransientFailure(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 14)
	// The coupon's Confirm fails for real: its ledger table is gone.
	db, _ := e.srv.App.Store().UserShardForTest(14)
	if _, err := db.ExecContext(ctxT(t), "RENAME TABLE coupon_ledger TO coupon_ledger_away"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if _, err := db.ExecContext(context.Background(), "RENAME TABLE coupon_ledger_away TO coupon_ledger"); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	// Try writes the ledger too, so break only after Try: hold the
	// payment's Confirm until the table is gone.
	if _, err := db.ExecContext(ctxT(t), "RENAME TABLE coupon_ledger_away TO coupon_ledger"); err != nil {
		t.Fatal(err)
	}
	e.pay.hold = make(chan struct{})
	done := make(chan error, 1)
	go func() { _, err := e.order("confirm-1", 14, c.Code, 8000); done <- err }()
	testenv.Eventually(t, 30*time.Second, "payment Confirm called", func() bool { return e.pay.count("/pay.Pay/Confirm") > 0 })
	if _, err := db.ExecContext(ctxT(t), "RENAME TABLE coupon_ledger TO coupon_ledger_away"); err != nil {
		t.Fatal(err)
	}
	close(e.pay.hold)
	if err := <-done; err != nil {
		t.Fatalf("global transaction: %v", err)
	}
	// Submitted; the coupon's Confirm cannot have succeeded while its ledger is gone.
	e.waitStatus(t, 14, c.Code, couponv1.Coupon_LOCKED)
	restore()
	e.waitStatus(t, 14, c.Code, couponv1.Coupon_USED)
	if l := e.ledger(t, 14, c.Code); l[participant.OpConsume] != 1 {
		t.Fatalf("ledger = %v, want exactly one CONSUME", l)
	}
}

// branchCtx carries DTM's barrier metadata as the coordinator would send it.
func branchCtx(t *testing.T, gid, op string) context.Context {
	return metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", gid, "dtm-trans_type", "tcc", "dtm-branch_id", "01", "dtm-op", op)
}

func branchReq(user int64, code, orderNo string) *couponv1.CouponBranchRequest {
	return &couponv1.CouponBranchRequest{UserId: user, CouponCode: code,
		Order: &couponv1.Order{OrderNo: orderNo, UserId: user, Amount: 9000, ProductLine: "food"}}
}

func TestBranchBarrierCases(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	cl := e.srv.Coupons

	t.Run("no barrier metadata", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 21)
		_, err := cl.LockCoupon(ctxT(t), branchReq(21, c.Code, "o-plain"))
		wantErr(t, err, codes.InvalidArgument, "MISSING_BARRIER")
		e.waitStatus(t, 21, c.Code, couponv1.Coupon_AVAILABLE)
	})
	t.Run("cancel before try, then the late try", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 22)
		if _, err := cl.UnlockCoupon(branchCtx(t, "g-hang", "cancel"), branchReq(22, c.Code, "o-hang")); err != nil {
			t.Fatalf("null compensation: %v", err)
		}
		_, err := cl.LockCoupon(branchCtx(t, "g-hang", "try"), branchReq(22, c.Code, "o-hang"))
		wantErr(t, err, codes.Aborted, "COUPON_NOT_AVAILABLE")
		e.waitStatus(t, 22, c.Code, couponv1.Coupon_AVAILABLE)
		if l := e.ledger(t, 22, c.Code); len(l) != 0 {
			t.Fatalf("ledger = %v, want nothing", l)
		}
	})
	t.Run("duplicate try and confirm", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 23)
		for i := range 2 {
			r, err := cl.LockCoupon(branchCtx(t, "g-dup", "try"), branchReq(23, c.Code, "o-dup"))
			if err != nil || r.DiscountAmount != 500 || r.Status != couponv1.Coupon_LOCKED {
				t.Fatalf("try #%d = %v, %v; want LOCKED with discount 500", i, r, err)
			}
		}
		for i := range 3 {
			if _, err := cl.ConsumeCoupon(branchCtx(t, "g-dup", "confirm"), branchReq(23, c.Code, "o-dup")); err != nil {
				t.Fatalf("confirm #%d: %v", i, err)
			}
		}
		e.waitStatus(t, 23, c.Code, couponv1.Coupon_USED)
		if l := e.ledger(t, 23, c.Code); l[participant.OpLock] != 1 || l[participant.OpConsume] != 1 {
			t.Fatalf("ledger = %v, want one LOCK and one CONSUME", l)
		}
	})
	t.Run("duplicate cancel", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 24)
		if _, err := cl.LockCoupon(branchCtx(t, "g-cc", "try"), branchReq(24, c.Code, "o-cc")); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if _, err := cl.UnlockCoupon(branchCtx(t, "g-cc", "cancel"), branchReq(24, c.Code, "o-cc")); err != nil {
				t.Fatalf("cancel #%d: %v", i, err)
			}
		}
		e.waitStatus(t, 24, c.Code, couponv1.Coupon_AVAILABLE)
		if l := e.ledger(t, 24, c.Code); l[participant.OpLock] != 1 || l[participant.OpRelease] != 1 {
			t.Fatalf("ledger = %v, want one LOCK and one RELEASE", l)
		}
	})
	t.Run("someone else's coupon", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 25)
		_, err := cl.LockCoupon(branchCtx(t, "g-owner", "try"), branchReq(26, c.Code, "o-owner"))
		wantErr(t, err, codes.Aborted, "COUPON_NOT_FOUND")
	})
}

func TestTCCTwoOrdersOneCoupon(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 31)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.order(fmt.Sprintf("race-%d", i), 31, c.Code, 8000)
		}()
	}
	wg.Wait()
	winners := 0
	winner := ""
	for i, err := range errs {
		if err == nil {
			winners++
			winner = fmt.Sprintf("order-race-%d", i)
		}
	}
	if winners != 1 {
		t.Fatalf("%d orders won the coupon (errors %v), want exactly 1", winners, errs)
	}
	got := e.waitStatus(t, 31, c.Code, couponv1.Coupon_USED)
	if got.OrderNo != winner {
		t.Fatalf("coupon used by %s, want the winner %s", got.OrderNo, winner)
	}
}

func TestTCCDailyUseLimit(t *testing.T) {
	e := newTCC(t)
	now := time.Now()
	tpl, err := e.srv.Admin.CreateTemplate(ctxT(t), &couponv1.CreateTemplateRequest{
		CampaignId: e.campaign.Id, Name: "one a day", CouponType: couponv1.CouponTemplate_PERCENT_OFF, PercentOff: 10,
		MaxDiscount: 1000, TotalStock: 10, DailyUseLimit: 1, UsageRule: `order.product_line in ["food", "ride"]`,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(time.Hour)), CreatedBy: "alice",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion()}); err != nil {
		t.Fatal(err)
	}
	a, b := e.claim(t, tpl.Id, 41), e.claim(t, tpl.Id, 41)
	resp, err := e.order("daily-1", 41, a.Code, 30000)
	if err != nil {
		t.Fatalf("first order: %v", err)
	}
	if resp.DiscountAmount != 1000 {
		t.Fatalf("discount = %d, want 10%% capped at 1000", resp.DiscountAmount)
	}
	_, err = e.order("daily-2", 41, b.Code, 30000)
	if code, reason := reasonOf(err); code != codes.Aborted || reason != "DAILY_USE_LIMIT_REACHED" {
		// The DTM client reports the branch's refusal; check the coupon too.
		if err == nil {
			t.Fatal("second order succeeded, want DAILY_USE_LIMIT_REACHED")
		}
	}
	e.waitStatus(t, 41, b.Code, couponv1.Coupon_AVAILABLE)
	// The branch itself says why.
	req := branchReq(41, b.Code, "o-daily-direct")
	req.Order.Amount = 30000
	_, err = e.srv.Coupons.LockCoupon(branchCtx(t, "g-daily-direct", "try"), req)
	wantErr(t, err, codes.Aborted, "DAILY_USE_LIMIT_REACHED")
	// Cancelling gives the day's use back: a failed payment does not use up the limit.
	c := e.claim(t, tpl.Id, 42)
	d := e.claim(t, tpl.Id, 42)
	e.pay.failTry.Store(true)
	if _, err := e.order("daily-3", 42, c.Code, 30000); err == nil {
		t.Fatal("order with failing payment succeeded")
	}
	e.waitStatus(t, 42, c.Code, couponv1.Coupon_AVAILABLE)
	e.pay.failTry.Store(false)
	if _, err := e.order("daily-4", 42, d.Code, 30000); err != nil {
		t.Fatalf("order after a cancelled one: %v", err)
	}
}

func TestTCCCoordinatorCrash(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 51)
	e.pay.hold = make(chan struct{})
	go func() { _, _ = e.order("crash-1", 51, c.Code, 8000) }()
	// The transaction is submitted and the coordinator is confirming it.
	testenv.Eventually(t, 30*time.Second, "payment Confirm under way", func() bool { return e.pay.count("/pay.Pay/Confirm") > 0 })
	e.dtm.Kill()
	close(e.pay.hold)
	twin := e.dtm.StartTwin()
	_ = twin
	e.waitStatus(t, 51, c.Code, couponv1.Coupon_USED)
	var status string
	store, err := sql.Open("mysql", e.dtm.StoreDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	testenv.Eventually(t, 30*time.Second, "global transaction succeeded", func() bool {
		err := store.QueryRow("SELECT status FROM trans_global WHERE gid = ?", "crash-1").Scan(&status)
		return err == nil && status == "succeed"
	})
}
