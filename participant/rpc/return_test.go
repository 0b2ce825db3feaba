package rpc_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// gate is a gRPC pass-through in front of the coupon service, as DTM sees
// it: it forwards every call's bytes with its authorization and DTM
// metadata, counts the answers per method and code, and answers
// Unavailable for a method while it is held (a service down for that call
// only).
type gate struct {
	addr string
	mu   sync.Mutex
	held map[string]bool
	seen map[string]map[codes.Code]int
}

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	g := &gate{held: map[string]bool{}, seen: map[string]map[codes.Code]int{}}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		var in []byte
		if err := stream.RecvMsg(&in); err != nil {
			return err
		}
		err := status.Error(codes.Unavailable, "held by the test")
		var out []byte
		if !g.isHeld(method) {
			md, _ := metadata.FromIncomingContext(stream.Context())
			fwd := metadata.MD{}
			for k, v := range md {
				if k == "authorization" || strings.HasPrefix(k, "dtm-") {
					fwd[k] = v
				}
			}
			ctx := metadata.NewOutgoingContext(stream.Context(), fwd)
			err = conn.Invoke(ctx, method, &in, &out, grpc.ForceCodec(rawCodec{}))
		}
		g.mu.Lock()
		if g.seen[method] == nil {
			g.seen[method] = map[codes.Code]int{}
		}
		g.seen[method][status.Code(err)]++
		g.mu.Unlock()
		if err != nil {
			return err
		}
		return stream.SendMsg(&out)
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	g.addr = lis.Addr().String()
	return g
}

func (g *gate) isHeld(method string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held[method]
}

func (g *gate) hold(method string, on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held[method] = on
}

func (g *gate) count(method string, code codes.Code) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen[method][code]
}

func (g *gate) url(method string) string { return g.addr + "/coupon.v1.CouponService/" + method }

// TestReturnWaitsForConfirm: a refund's ReturnCoupon that finds the coupon
// still LOCKED for the refunded order — its Confirm not run yet — answers
// FailedPrecondition COUPON_LOCKED_PENDING_CONFIRM (DTM's ONGOING) without
// committing its barrier, so the retry is not a duplicate; once the lock is
// consumed it returns the coupon once, once it is released it answers OK
// with nothing to return, and a replay reports the coupon as it is. A
// coupon locked for another order is not waited for. Through a real
// coordinator: the coupon's Confirm is held back while the refund's message
// runs; DTM retries the Return until the Confirm lands, and the coupon ends
// RETURNED (AVAILABLE) with LOCK, CONSUME and RETURN once each in its
// ledger.
func TestReturnWaitsForConfirm(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	cl := e.srv.Coupons
	msg := func(gid string) context.Context {
		return metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", gid, "dtm-trans_type", "msg", "dtm-branch_id", "02", "dtm-op", "action")
	}
	ret := func(ctx context.Context, user int64, code, order string) (*couponv1.ReturnCouponResponse, error) {
		return cl.ReturnCoupon(ctx, &couponv1.ReturnCouponRequest{RequestId: "refund-" + order, UserId: user, CouponCode: code, OrderNo: order, Reason: "refund"})
	}

	t.Run("consumed after the return first came", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 401)
		if _, err := cl.LockCoupon(branchCtx(t, "g-401", "try"), branchReq(401, c.Code, "o-401")); err != nil {
			t.Fatal(err)
		}
		for i := range 2 { // the second would be a skipped duplicate had the first committed its barrier
			_, err := ret(msg("refund-o-401"), 401, c.Code, "o-401")
			wantErr(t, err, codes.FailedPrecondition, "COUPON_LOCKED_PENDING_CONFIRM")
			if i == 0 {
				// Called directly (no barrier) it waits the same way.
				_, err := ret(ctxT(t), 401, c.Code, "o-401")
				wantErr(t, err, codes.FailedPrecondition, "COUPON_LOCKED_PENDING_CONFIRM")
			}
		}
		e.waitStatus(t, 401, c.Code, couponv1.Coupon_LOCKED)
		if _, err := cl.ConsumeCoupon(branchCtx(t, "g-401", "confirm"), branchReq(401, c.Code, "o-401")); err != nil {
			t.Fatal(err)
		}
		for i, wantReplayed := range []bool{false, true} {
			r, err := ret(msg("refund-o-401"), 401, c.Code, "o-401")
			if err != nil || r.Replayed != wantReplayed || r.Coupon.GetStatus() != couponv1.Coupon_AVAILABLE {
				t.Fatalf("return #%d after the Confirm = %v, %v; want the coupon AVAILABLE, replayed %v", i, r, err, wantReplayed)
			}
		}
		if l := e.ledger(t, 401, c.Code); l["LOCK"] != 1 || l["CONSUME"] != 1 || l["RETURN"] != 1 {
			t.Fatalf("ledger = %v; want LOCK, CONSUME and RETURN once each", l)
		}
	})
	t.Run("released after the return first came", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 402)
		if _, err := cl.LockCoupon(branchCtx(t, "g-402", "try"), branchReq(402, c.Code, "o-402")); err != nil {
			t.Fatal(err)
		}
		_, err := ret(msg("refund-o-402"), 402, c.Code, "o-402")
		wantErr(t, err, codes.FailedPrecondition, "COUPON_LOCKED_PENDING_CONFIRM")
		if _, err := cl.UnlockCoupon(branchCtx(t, "g-402", "cancel"), branchReq(402, c.Code, "o-402")); err != nil {
			t.Fatal(err)
		}
		// Nothing to return; the replay (skipped by the barrier) reports
		// the coupon as it is, not a return that never happened.
		for i := range 2 {
			r, err := ret(msg("refund-o-402"), 402, c.Code, "o-402")
			if err != nil || r.Replayed || r.Coupon.GetStatus() != couponv1.Coupon_AVAILABLE {
				t.Fatalf("return #%d after the Cancel = %v, %v; want OK with the coupon AVAILABLE, not replayed", i, r, err)
			}
		}
		if l := e.ledger(t, 402, c.Code); l["RETURN"] != 0 || l["RELEASE"] != 1 {
			t.Fatalf("ledger = %v; want a RELEASE and no RETURN", l)
		}
	})
	t.Run("locked for another order", func(t *testing.T) {
		// The refunded order's lock was settled before another order could
		// lock the coupon: nothing of the refunded order comes back by
		// waiting, so the message branch completes.
		c := e.claim(t, tpl.Id, 403)
		if _, err := cl.LockCoupon(branchCtx(t, "g-403", "try"), branchReq(403, c.Code, "o-403-next")); err != nil {
			t.Fatal(err)
		}
		r, err := ret(msg("refund-o-403"), 403, c.Code, "o-403")
		if err != nil || r.Replayed || r.Coupon.GetStatus() != couponv1.Coupon_LOCKED || r.Coupon.GetOrderNo() != "o-403-next" {
			t.Fatalf("return for another order's lock = %v, %v; want OK with the coupon still LOCKED for o-403-next", r, err)
		}
	})
	t.Run("through DTM with the Confirm held back", func(t *testing.T) {
		g := newGate(t, e.srv.Addr)
		const consume, ret = "/coupon.v1.CouponService/ConsumeCoupon", "/coupon.v1.CouponService/ReturnCoupon"
		c := e.claim(t, tpl.Id, 404)
		req := branchReq(404, c.Code, "o-404")
		g.hold(consume, true)
		err := e.tcc("pay-o-404", func(tcc *dtmgrpc.TccGrpc) error {
			return tcc.CallBranch(req, e.url("LockCoupon"), g.url("ConsumeCoupon"), e.url("UnlockCoupon"), &couponv1.CouponBranchResponse{})
		})
		if err != nil {
			t.Fatalf("order's transaction: %v", err)
		}
		// The order is paid (DTM committed); the coupon's Confirm is down.
		testenv.Eventually(t, 30*time.Second, "the coupon's Confirm to be tried", func() bool { return g.count(consume, codes.Unavailable) > 0 })
		refund := dtmgrpc.NewMsgGrpc(e.dtm.GRPCAddr, "refund-o-404", dtmgrpc.WithBranchHeaders(coupontest.BranchHeaders())).
			Add(g.url("ReturnCoupon"), &couponv1.ReturnCouponRequest{RequestId: "refund-o-404", UserId: 404, CouponCode: c.Code, OrderNo: "o-404", Reason: "refund"})
		if err := refund.Submit(); err != nil {
			t.Fatalf("refund's message: %v", err)
		}
		// DTM keeps the message going while the coupon is locked.
		testenv.Eventually(t, 30*time.Second, "the Return to be retried while the coupon is locked", func() bool {
			return g.count(ret, codes.FailedPrecondition) >= 2
		})
		if g.count(ret, codes.OK) != 0 {
			t.Fatal("the Return answered OK while the coupon was locked")
		}
		if st := e.dtmStatus(t, "refund-o-404"); st != "submitted" {
			t.Fatalf("refund's message is %s while the coupon is locked; want submitted", st)
		}
		e.waitStatus(t, 404, c.Code, couponv1.Coupon_LOCKED)
		g.hold(consume, false)
		e.waitDTM(t, "pay-o-404", "succeed")
		e.waitDTM(t, "refund-o-404", "succeed")
		got := e.waitStatus(t, 404, c.Code, couponv1.Coupon_AVAILABLE)
		if got.OrderNo != "" || got.Gid != "" {
			t.Fatalf("returned coupon = %v; want no order or transaction", got)
		}
		if l := e.ledger(t, 404, c.Code); l["LOCK"] != 1 || l["CONSUME"] != 1 || l["RETURN"] != 1 || l["RELEASE"] != 0 {
			t.Fatalf("ledger = %v; want LOCK, CONSUME and RETURN once each", l)
		}
	})
}
