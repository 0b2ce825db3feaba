package rpc_test

import (
	"context"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestSagaBranches drives UseCoupon and UseCouponRevert the way DTM does:
// the action uses the coupon for its transaction, the compensation gives
// back only its own use, a compensation before its action (null
// compensation) changes nothing and makes the late action refuse (hanging),
// and a second saga for the same order can neither use nor free it.
func TestSagaBranches(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	cl := e.srv.Coupons
	saga := func(gid, op string) context.Context {
		return metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", gid, "dtm-trans_type", "saga", "dtm-branch_id", "01", "dtm-op", op)
	}
	t.Run("use and revert", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 301)
		for i := range 2 { // the second is a duplicate
			r, err := cl.UseCoupon(saga("s-1", "action"), branchReq(301, c.Code, "o-s1"))
			if err != nil || r.Status != couponv1.Coupon_USED || r.DiscountAmount != 500 {
				t.Fatalf("action #%d = %v, %v; want USED with 500 off", i, r, err)
			}
		}
		got := e.waitStatus(t, 301, c.Code, couponv1.Coupon_USED)
		if got.Gid != "s-1" || got.OrderNo != "o-s1" {
			t.Fatalf("used coupon = %v", got)
		}
		if uses := e.dailyUses(t, 301, tpl.Id); uses != 1 {
			t.Fatalf("daily uses = %d, want 1", uses)
		}
		// Another saga for the same order neither uses nor frees it.
		_, err := cl.UseCoupon(saga("s-2", "action"), branchReq(301, c.Code, "o-s1"))
		wantErr(t, err, codes.Aborted, "COUPON_NOT_AVAILABLE")
		if _, err := cl.UseCouponRevert(saga("s-2", "compensate"), branchReq(301, c.Code, "o-s1")); err != nil {
			t.Fatalf("other saga's compensation: %v, want OK", err)
		}
		e.waitStatus(t, 301, c.Code, couponv1.Coupon_USED)
		for range 2 {
			if _, err := cl.UseCouponRevert(saga("s-1", "compensate"), branchReq(301, c.Code, "o-s1")); err != nil {
				t.Fatalf("compensation: %v", err)
			}
		}
		e.waitStatus(t, 301, c.Code, couponv1.Coupon_AVAILABLE)
		if uses := e.dailyUses(t, 301, tpl.Id); uses != 0 {
			t.Fatalf("daily uses after the compensation = %d, want 0", uses)
		}
		if l := e.ledger(t, 301, c.Code); l["LOCK"] != 1 || l["CONSUME"] != 1 || l["RELEASE"] != 1 {
			t.Fatalf("ledger = %v, want LOCK, CONSUME, RELEASE once each", l)
		}
	})
	t.Run("revert before action, then the late action", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 302)
		if _, err := cl.UseCouponRevert(saga("s-hang", "compensate"), branchReq(302, c.Code, "o-hang")); err != nil {
			t.Fatalf("null compensation: %v", err)
		}
		_, err := cl.UseCoupon(saga("s-hang", "action"), branchReq(302, c.Code, "o-hang"))
		wantErr(t, err, codes.Aborted, "COUPON_NOT_AVAILABLE")
		e.waitStatus(t, 302, c.Code, couponv1.Coupon_AVAILABLE)
		if l := e.ledger(t, 302, c.Code); len(l) != 0 {
			t.Fatalf("ledger = %v, want nothing", l)
		}
	})
	t.Run("refusal is Aborted with the reason", func(t *testing.T) {
		c := e.claim(t, tpl.Id, 303)
		req := branchReq(303, c.Code, "o-small")
		req.Order.Amount = 1000 // below the 5000 threshold
		_, err := cl.UseCoupon(saga("s-small", "action"), req)
		wantErr(t, err, codes.Aborted, "RULE_NOT_MET")
		_, err = cl.UseCoupon(saga("s-bad", "action"), branchReq(303, "bad", "o-bad"))
		wantErr(t, err, codes.Aborted, "INVALID_ARGUMENT")
		if _, err := cl.UseCouponRevert(saga("s-bad", "compensate"), branchReq(303, "bad", "o-bad")); err != nil {
			t.Fatalf("compensation of a malformed branch: %v, want OK", err)
		}
	})
}

// TestSagaThroughDTM: a saga whose payment action fails is compensated by
// DTM and the coupon is AVAILABLE again; one that succeeds leaves it USED.
func TestSagaThroughDTM(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	run := func(gid string, user int64, code string) error {
		req := branchReq(user, code, "order-"+gid)
		s := dtmgrpc.NewSagaGrpc(e.dtm.GRPCAddr, gid).
			Add(e.url("UseCoupon"), e.url("UseCouponRevert"), req).
			Add(e.pay.addr+"/pay.Pay/Try", e.pay.addr+"/pay.Pay/Cancel", &emptypb.Empty{})
		s.WaitResult = true
		s.BranchHeaders = coupontest.BranchHeaders(t, gid, coupontcc.OrderOf(req))
		return s.Submit()
	}
	c := e.claim(t, tpl.Id, 311)
	e.pay.failTry.Store(true)
	if err := run("saga-fail", 311, c.Code); err == nil {
		t.Fatal("saga with a failing payment succeeded")
	}
	e.waitDTM(t, "saga-fail", "failed")
	e.waitStatus(t, 311, c.Code, couponv1.Coupon_AVAILABLE)
	e.pay.failTry.Store(false)
	if err := run("saga-ok", 311, c.Code); err != nil {
		t.Fatalf("saga: %v", err)
	}
	e.waitDTM(t, "saga-ok", "succeed")
	got := e.waitStatus(t, 311, c.Code, couponv1.Coupon_USED)
	if got.Gid != "saga-ok" {
		t.Fatalf("coupon used by %q, want saga-ok", got.Gid)
	}
}

// TestReturnCoupon: a coupon used by a refunded order comes back once per
// request ID, with a ledger RETURN row; one not used by that order, or of a
// template that does not return its coupons, is COUPON_NOT_RETURNABLE when
// called directly and OK with nothing changed as a DTM message branch.
func TestReturnCoupon(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	cl := e.srv.Coupons
	use := func(user int64, code, order string) {
		t.Helper()
		ctx := metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", "use-"+order, "dtm-trans_type", "saga", "dtm-branch_id", "01", "dtm-op", "action")
		if _, err := cl.UseCoupon(ctx, branchReq(user, code, order)); err != nil {
			t.Fatal(err)
		}
	}
	ret := func(req, order string, user int64, code string) (*couponv1.ReturnCouponResponse, error) {
		return cl.ReturnCoupon(ctxT(t), &couponv1.ReturnCouponRequest{RequestId: req, UserId: user, CouponCode: code, OrderNo: order, Reason: "refund"})
	}
	c := e.claim(t, tpl.Id, 321)
	use(321, c.Code, "o-ret")
	_, err := ret("ret-wrong", "o-other", 321, c.Code)
	wantErr(t, err, codes.FailedPrecondition, "COUPON_NOT_RETURNABLE")
	for i, wantReplayed := range []bool{false, true} {
		r, err := ret("ret-1", "o-ret", 321, c.Code)
		if err != nil || r.Replayed != wantReplayed || r.Coupon.Status != couponv1.Coupon_AVAILABLE || r.Coupon.OrderNo != "" {
			t.Fatalf("return #%d = %v, %v; want AVAILABLE, replayed %v", i, r, err, wantReplayed)
		}
	}
	_, err = ret("ret-2", "o-ret", 321, c.Code)
	wantErr(t, err, codes.FailedPrecondition, "COUPON_NOT_RETURNABLE")
	if l := e.ledger(t, 321, c.Code); l["RETURN"] != 1 {
		t.Fatalf("ledger = %v, want one RETURN", l)
	}
	// Returned once, usable again.
	use(321, c.Code, "o-again")
	e.waitStatus(t, 321, c.Code, couponv1.Coupon_USED)

	// A template whose coupons do not come back.
	kept, err := e.srv.Admin.CreateTemplate(ctxT(t), &couponv1.CreateTemplateRequest{
		CampaignId: e.campaign.Id, Name: "final", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 500,
		MinOrderAmount: 5000, TotalStock: 10, Returnable: ptrBool(false), CreatedBy: "alice",
		ValidFrom: timestamppb.New(time.Now().Add(-time.Minute)), ValidUntil: timestamppb.New(time.Now().Add(time.Hour)),
	})
	if err != nil || kept.Returnable {
		t.Fatalf("CreateTemplate(returnable false) = %v, %v", kept, err)
	}
	if _, err := e.srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: kept.Id}); err != nil {
		t.Fatal(err)
	}
	k := e.claim(t, kept.Id, 322)
	use(322, k.Code, "o-kept")
	_, err = ret("ret-kept", "o-kept", 322, k.Code)
	wantErr(t, err, codes.FailedPrecondition, "COUPON_NOT_RETURNABLE")
	msg := metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", "refund-o-kept", "dtm-trans_type", "msg", "dtm-branch_id", "02", "dtm-op", "action")
	r, err := cl.ReturnCoupon(msg, &couponv1.ReturnCouponRequest{RequestId: "ret-kept", UserId: 322, CouponCode: k.Code, OrderNo: "o-kept"})
	if err != nil || r.Coupon.GetStatus() != couponv1.Coupon_USED {
		t.Fatalf("message branch return of a kept coupon = %v, %v; want OK with the coupon USED", r, err)
	}
}

func ptrBool(b bool) *bool { return &b }
