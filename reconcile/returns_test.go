package reconcile_test

import (
	"context"
	"database/sql"
	"net"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
	"github.com/opencoupon/coupon/reconcile"
)

// TestRefundedCouponNotReturnedIsReported: a refunded order whose coupon
// is still USED is REFUND_COUPON_NOT_RETURNED once past the grace window.
// The lost coupon is what an earlier release left behind when the refund's
// Return came before the coupon's Confirm (it answered OK, nothing to
// return, and the late Confirm used the coupon): the order and its payment
// REFUNDED, the coupon USED. The repair gives it back through ReturnCoupon
// exactly once; a coupon of a template that keeps used coupons, refunded
// through the shop, is recorded as consistent; a rerun reports both
// resolved and repairs nothing again.
func TestRefundedCouponNotReturnedIsReported(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator, a coupon service and the shop")
	}
	s := startStack(t)
	ctx := context.Background()

	// Lost: paid through the shop, refunded as the old release did.
	lost := s.claim(t, 2001)
	if o := s.order(t, "lost-1", 2001, 10000, 8000, lost); o.GetStatus() != shopv1.Order_PAID {
		t.Fatalf("lost-1 = %v; want PAID", o)
	}
	for _, q := range []struct{ dsn, stmt string }{
		{s.shop.orderDSN, `UPDATE orders SET status = 'REFUNDED', refund_gid = 'shop-refund-lost-1-old', refunded_at = NOW(6), updated_at = NOW(6) WHERE order_no = 'lost-1'`},
		{s.shop.paymentDSN, `UPDATE payments SET status = 'REFUNDED', updated_at = NOW(6) WHERE order_no = 'lost-1'`},
	} {
		db, err := sql.Open("mysql", q.dsn)
		if err != nil {
			t.Fatal(err)
		}
		res, err := db.ExecContext(ctx, q.stmt)
		db.Close()
		if n, _ := res.RowsAffected(); err != nil || n != 1 {
			t.Fatalf("%s: %d rows, %v", q.stmt, n, err)
		}
	}
	// Kept: a template whose coupons do not come back, refunded through the shop.
	now := time.Now()
	kept, err := s.coupons.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: s.campaign(t), Name: "final 10 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 1000, MinOrderAmount: 5000, TotalStock: 10, Returnable: proto.Bool(false),
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)), CreatedBy: "alice",
	})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if _, err := s.coupons.AdminAs(coupontest.TokenBob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: kept.GetId(), ApprovedBy: "bob"}); err != nil {
		t.Fatalf("ApproveTemplate: %v", err)
	}
	c, err := s.coupons.Coupons.ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: t.Name() + "-kept", UserId: 2002, TemplateId: kept.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	keptCode := c.GetCode()
	if o := s.order(t, "kept-1", 2002, 10000, 8000, keptCode); o.GetStatus() != shopv1.Order_PAID {
		t.Fatalf("kept-1 = %v; want PAID", o)
	}
	if o, err := s.shop.orders.RefundOrder(ctx, &shopv1.RefundOrderRequest{OrderNo: "kept-1", Reason: "changed my mind"}); err != nil || o.GetStatus() != shopv1.Order_REFUNDED {
		t.Fatalf("RefundOrder(kept-1) = %v, %v; want REFUNDED", o, err)
	}
	for _, c := range []struct {
		user int64
		code string
	}{{2001, lost}, {2002, keptCode}} {
		if got := s.coupon(t, c.user, c.code); got.GetStatus() != couponv1.Coupon_USED {
			t.Fatalf("coupon %s is %v before the run; want USED", c.code, got.GetStatus())
		}
	}

	conn, err := grpc.NewClient(s.coupons.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	coupons := reconcile.CouponGRPC{Conn: conn, DTM: s.dtm.GRPCAddr, Token: coupontest.TokenShop}
	repairer := func(apply bool) *reconcile.Repairer {
		return &reconcile.Repairer{
			State: s.state, DTM: reconcile.DTMHTTP{Addr: s.dtm.HTTPAddr}, Coupons: coupons,
			TimeoutToFail: 20 * time.Second, Grace: time.Second, Apply: apply, Now: time.Now,
		}
	}
	judged := asOf(t)
	want := map[key]bool{{reconcile.ClassRefundCouponNotReturned, "lost-1", lost}: true, {reconcile.ClassRefundCouponNotReturned, "kept-1", keptCode}: true}
	_, findings, items := s.job(t, judged, repairer(false))
	if d := diffSets(keys(findings), want); d != "" {
		t.Fatalf("findings differ (+got -want):\n%s\nfindings: %+v", d, findings)
	}
	for _, f := range findings {
		if f.AmountAtRisk != 1000 || f.UserID == 0 || f.OrderStatus != "REFUNDED" {
			t.Errorf("finding %+v; want 1000 at risk, the user, order REFUNDED", f)
		}
	}
	checkItems(t, items, map[string]string{"lost-1": reconcile.RepairPlanned, "kept-1": reconcile.RepairPlanned})
	if got := s.coupon(t, 2001, lost); got.GetStatus() != couponv1.Coupon_USED {
		t.Fatalf("after the dry run coupon is %v; want USED", got.GetStatus())
	}

	_, _, items = s.job(t, judged, repairer(true))
	checkItems(t, items, map[string]string{"lost-1": reconcile.RepairApplied, "kept-1": reconcile.RepairApplied})
	for _, it := range items {
		if it.Action != reconcile.ActionReturn {
			t.Errorf("repair %+v; want action %s", it, reconcile.ActionReturn)
		}
	}
	if got := s.coupon(t, 2001, lost); got.GetStatus() != couponv1.Coupon_AVAILABLE || got.GetOrderNo() != "" {
		t.Fatalf("after the repair the lost coupon is %v for %q; want AVAILABLE", got.GetStatus(), got.GetOrderNo())
	}
	if got := s.coupon(t, 2002, keptCode); got.GetStatus() != couponv1.Coupon_USED {
		t.Fatalf("after the repair the kept coupon is %v; want USED", got.GetStatus())
	}
	// The repair's return is idempotent: asked again, it is a replay.
	if err := coupons.Return(ctx, reconcile.Refund{OrderNo: "lost-1", CouponCode: lost, UserID: 2001}); err != nil {
		t.Fatalf("second return: %v; want a replay", err)
	}
	if n := s.ledgerOps(t, lost, "RETURN"); n != 1 {
		t.Fatalf("%d RETURN rows for %s; want exactly 1", n, lost)
	}

	// The same as-of again: both found, both resolved, nothing repaired twice.
	res, findings, items := s.job(t, judged, repairer(true))
	if len(findings) != 2 || res.Open != 0 || res.Resolved != 2 || len(items) != 0 {
		t.Errorf("rerun: %d findings, %d open, %d resolved, repair items %+v; want 2 resolved, nothing to repair", len(findings), res.Open, res.Resolved, items)
	}
	// Judged now, with the return in the window: the lost order is clean.
	_, findings, _ = s.job(t, asOf(t), repairer(true))
	for _, f := range findings {
		if f.OrderNo == "lost-1" {
			t.Errorf("after the return: %+v", f)
		}
	}
	// A usable coupon again: a new order takes it.
	if o := s.order(t, "after-return", 2001, 10000, 8000, lost); o.GetStatus() != shopv1.Order_PAID || o.GetDiscountAmount() != 1000 {
		t.Fatalf("new order with the returned coupon = %v; want PAID with discount 1000", o)
	}
}

// campaign returns the stack's campaign (that of its template).
func (s *stack) campaign(t *testing.T) int64 {
	t.Helper()
	tpl, err := s.coupons.Admin.GetTemplate(context.Background(), &couponv1.GetTemplateRequest{TemplateId: s.tpl})
	if err != nil {
		t.Fatal(err)
	}
	return tpl.GetCampaignId()
}

// ledgerOps counts a coupon's ledger rows of op over every shard.
func (s *stack) ledgerOps(t *testing.T, code, op string) int {
	t.Helper()
	total := 0
	for _, dsn := range s.coupons.Config.MySQL.ShardDSNs {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = db.QueryRow(`SELECT COUNT(*) FROM coupon_ledger WHERE coupon_code = ? AND op = ?`, code, op).Scan(&n)
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// TestRepairKeepsLocksOfUnfinishedTransactions: an orphan lock whose
// transaction DTM still holds as prepared, submitted or aborting is left to
// DTM (wait), however old, and stays LOCKED: only a failed (or unknown and
// old) transaction's lock is released.
func TestRepairKeepsLocksOfUnfinishedTransactions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator, a coupon service and the shop")
	}
	s := startStack(t)
	ctx := context.Background()
	dtm := reconcile.DTMHTTP{Addr: s.dtm.HTTPAddr}
	down := stubParticipant(t)
	u := testenv.Unique(t)

	// prepared: a 2-phase message prepared and never submitted, back-checked only after an hour.
	prepared := "unfinished-prepared-" + u
	msg := dtmgrpc.NewMsgGrpc(s.dtm.GRPCAddr, prepared).Add(down+"/stub.Stub/Down", &emptypb.Empty{})
	msg.TimeoutToFail = 3600
	if err := msg.Prepare(down + "/stub.Stub/Down"); err != nil {
		t.Fatalf("prepare %s: %v", prepared, err)
	}
	// submitted: a message whose branch keeps failing.
	submitted := "unfinished-submitted-" + u
	if err := dtmgrpc.NewMsgGrpc(s.dtm.GRPCAddr, submitted).Add(down+"/stub.Stub/Down", &emptypb.Empty{}).Submit(); err != nil {
		t.Fatalf("submit %s: %v", submitted, err)
	}
	// aborting: a TCC whose Try failed and whose Cancel keeps failing.
	aborting := "unfinished-aborting-" + u
	err := dtmgrpc.TccGlobalTransaction(s.dtm.GRPCAddr, aborting, func(tcc *dtmgrpc.TccGrpc) error {
		return tcc.CallBranch(&emptypb.Empty{}, down+"/stub.Stub/Refuse", down+"/stub.Stub/Down", down+"/stub.Stub/Down", &emptypb.Empty{})
	})
	if err == nil {
		t.Fatalf("%s committed; want its Try refused", aborting)
	}
	gids := map[string]string{"o-prepared": prepared, "o-submitted": submitted, "o-aborting": aborting}
	wantDTM := map[string]string{prepared: reconcile.DTMPrepared, submitted: reconcile.DTMSubmitted, aborting: reconcile.DTMAborting}
	for gid, st := range wantDTM {
		testenv.Eventually(t, 30*time.Second, "DTM holds "+gid+" as "+st, func() bool {
			got, err := dtm.Status(ctx, gid)
			return err == nil && got == st
		})
	}
	// Each transaction's coupon branch locked a coupon.
	held := map[string]string{}
	user := int64(3000)
	users := map[string]int64{}
	for order, gid := range gids {
		user++
		code := s.claim(t, user)
		if _, err := s.coupons.Coupons.LockCoupon(barrierCtx(ctx, gid, "try"), branchReq(user, code, order)); err != nil {
			t.Fatalf("LockCoupon under %s: %v", gid, err)
		}
		held[order], users[order] = code, user
	}

	conn, err := grpc.NewClient(s.coupons.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A day later, far past TimeoutToFail + grace.
	later := time.Now().Add(24 * time.Hour)
	rp := &reconcile.Repairer{
		State: s.state, DTM: dtm, Coupons: reconcile.CouponGRPC{Conn: conn, DTM: s.dtm.GRPCAddr, Token: coupontest.TokenShop},
		TimeoutToFail: 20 * time.Second, Grace: time.Second, Apply: true, Now: func() time.Time { return later },
	}
	_, findings, items := s.job(t, asOf(t), rp)
	want := map[key]bool{}
	for order, code := range held {
		want[key{reconcile.ClassOrphanLock, order, code}] = true
	}
	if d := diffSets(keys(findings), want); d != "" {
		t.Fatalf("findings differ (+got -want):\n%s", d)
	}
	checkItems(t, items, map[string]string{"o-prepared": reconcile.RepairWait, "o-submitted": reconcile.RepairWait, "o-aborting": reconcile.RepairWait})
	for _, it := range items {
		if it.DTMStatus != wantDTM[gids[it.OrderNo]] {
			t.Errorf("repair of %s saw DTM %q; want %q", it.OrderNo, it.DTMStatus, wantDTM[gids[it.OrderNo]])
		}
	}
	for order, code := range held {
		if got := s.coupon(t, users[order], code); got.GetStatus() != couponv1.Coupon_LOCKED || got.GetGid() != gids[order] {
			t.Errorf("coupon of %s is %v by %q after the repair; want LOCKED by %s", order, got.GetStatus(), got.GetGid(), gids[order])
		}
		if n := s.ledgerCount(t, gids[order], "RELEASE"); n != 0 {
			t.Errorf("%d RELEASE rows for %s; want none", n, gids[order])
		}
	}
}

// stubParticipant is a DTM participant over real gRPC that refuses Refuse
// (Aborted, DTM's FAILURE) and answers Unavailable to everything else, so
// DTM keeps retrying; it returns its address.
func stubParticipant(t *testing.T) string {
	t.Helper()
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
			return err
		}
		if method == "/stub.Stub/Refuse" {
			return status.Error(codes.Aborted, "refused")
		}
		return status.Error(codes.Unavailable, "down")
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}
