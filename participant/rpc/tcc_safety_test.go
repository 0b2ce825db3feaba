package rpc_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/client/dtmgrpc/dtmgimp"
	"github.com/dtm-labs/client/dtmgrpc/dtmgpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmquery"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// event is one branch call of one of two global transactions for one order.
type event struct {
	tx int    // 0 or 1
	op string // "try", "confirm" or "cancel"
}

// model is what DTM's barrier and the gid-bound lock must make of a
// sequence of branch calls: each transaction's Try locks an AVAILABLE
// coupon unless its Cancel came first (hanging) or another transaction
// holds it; only the holder's Confirm uses it and only the holder's Cancel
// gives it back.
type model struct {
	status   couponv1.Coupon_Status
	holder   int     // -1: none
	tried    [2]bool // the Try's barrier row exists (it succeeded)
	canceled [2]bool // the Cancel's barrier row exists
}

// apply plays e and returns whether it should answer OK (else Aborted).
func (m *model) apply(e event) bool {
	switch e.op {
	case "try":
		if m.canceled[e.tx] || m.status != couponv1.Coupon_AVAILABLE {
			return false
		}
		m.tried[e.tx], m.status, m.holder = true, couponv1.Coupon_LOCKED, e.tx
	case "confirm":
		if m.status == couponv1.Coupon_LOCKED && m.holder == e.tx {
			m.status = couponv1.Coupon_USED
		}
	case "cancel":
		m.canceled[e.tx] = true
		if m.tried[e.tx] && m.status == couponv1.Coupon_LOCKED && m.holder == e.tx {
			m.status, m.holder = couponv1.Coupon_AVAILABLE, -1
		}
	}
	return true
}

// arrivals lists every order in which two transactions' Try and second
// phase can reach the coupon service, for every pair of outcomes. A
// Confirm never precedes its own Try (DTM confirms only after every Try
// answered), a Cancel may (DTM rolls back a Try that timed out).
func arrivals() [][]event {
	var out [][]event
	var perm func(prefix []event, rest []event)
	perm = func(prefix, rest []event) {
		if len(rest) == 0 {
			out = append(out, append([]event(nil), prefix...))
			return
		}
		for i := range rest {
			e := rest[i]
			if e.op == "confirm" && !hasTry(prefix, e.tx) {
				continue
			}
			next := append(append([]event(nil), rest[:i]...), rest[i+1:]...)
			perm(append(prefix, e), next)
		}
	}
	for _, second := range [][2]string{{"confirm", "cancel"}, {"cancel", "confirm"}, {"cancel", "cancel"}, {"confirm", "confirm"}} {
		perm(nil, []event{{0, "try"}, {0, second[0]}, {1, "try"}, {1, second[1]}})
	}
	return out
}

func hasTry(es []event, tx int) bool {
	for _, e := range es {
		if e.tx == tx && e.op == "try" {
			return true
		}
	}
	return false
}

func describe(es []event) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = fmt.Sprintf("%s%d", e.op, e.tx+1)
	}
	return strings.Join(parts, ",")
}

// TestTwoTransactionsOneOrder plays two global transactions for one order
// (an order service retrying under a new gid, or a forged branch call) in
// every order of arrival: the coupon ends USED by exactly the transaction
// that committed holding it, or AVAILABLE if none did, and its day's use is
// counted once.
func TestTwoTransactionsOneOrder(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 200, 0)
	cl := e.srv.Coupons
	for n, seq := range arrivals() {
		t.Run(describe(seq), func(t *testing.T) {
			user := int64(1000 + n)
			c := e.claim(t, tpl.Id, user)
			orderNo := fmt.Sprintf("two-gids-%d", n)
			gids := [2]string{fmt.Sprintf("g1-%d", n), fmt.Sprintf("g2-%d", n)}
			m := &model{status: couponv1.Coupon_AVAILABLE, holder: -1}
			for _, ev := range seq {
				wantOK := m.apply(ev)
				ctx := branchCtx(t, gids[ev.tx], ev.op)
				req := branchReq(user, c.Code, orderNo)
				var err error
				switch ev.op {
				case "try":
					_, err = cl.LockCoupon(ctx, req)
				case "confirm":
					_, err = cl.ConsumeCoupon(ctx, req)
				case "cancel":
					_, err = cl.UnlockCoupon(ctx, req)
				}
				if wantOK && err != nil {
					t.Fatalf("%s of transaction %d: %v, want OK", ev.op, ev.tx+1, err)
				}
				if !wantOK {
					wantErr(t, err, codes.Aborted, "COUPON_NOT_AVAILABLE")
				}
			}
			got, err := cl.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: user, CouponCode: c.Code})
			if err != nil {
				t.Fatal(err)
			}
			wantGID := ""
			if m.holder >= 0 {
				wantGID = gids[m.holder]
			}
			if got.Status != m.status || got.Gid != wantGID {
				t.Fatalf("coupon = %s held by %q, want %s held by %q", got.Status, got.Gid, m.status, wantGID)
			}
			wantUses := 0
			if m.status != couponv1.Coupon_AVAILABLE {
				wantUses = 1
			}
			if uses := e.dailyUses(t, user, tpl.Id); uses != wantUses {
				t.Fatalf("daily uses counted = %d, want %d", uses, wantUses)
			}
		})
	}
}

// dailyUses is the user's count of the template's uses today.
func (e *tccEnv) dailyUses(t *testing.T, user, tplID int64) int {
	t.Helper()
	var n int
	db, _ := e.srv.App.Store().UserShardForTest(user)
	err := db.QueryRowContext(ctxT(t),
		`SELECT COALESCE(SUM(used), 0) FROM daily_use WHERE user_id = ? AND template_id = ?`, user, tplID).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCancelReleasesOnlyItsOwnLock: a Cancel that names the coupon and
// the order but another transaction, or the transaction and another order,
// frees nothing.
func TestCancelReleasesOnlyItsOwnLock(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	cl := e.srv.Coupons
	c := e.claim(t, tpl.Id, 61)
	if _, err := cl.LockCoupon(branchCtx(t, "g-own", "try"), branchReq(61, c.Code, "o-own")); err != nil {
		t.Fatal(err)
	}
	// DTM runs one Cancel per branch; the transaction's own gid with another
	// order comes as another branch (02), or it would use up the barrier
	// of branch 01's Cancel.
	for _, tc := range []struct{ gid, branch, order string }{{"g-other", "01", "o-own"}, {"g-own", "02", "o-other"}, {"g-other", "02", "o-other"}} {
		ctx := metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", tc.gid, "dtm-trans_type", "tcc", "dtm-branch_id", tc.branch, "dtm-op", "cancel")
		if _, err := cl.UnlockCoupon(ctx, branchReq(61, c.Code, tc.order)); err != nil {
			t.Fatalf("cancel %s/%s: %v, want OK", tc.gid, tc.order, err)
		}
		got := e.waitStatus(t, 61, c.Code, couponv1.Coupon_LOCKED)
		if got.Gid != "g-own" || got.OrderNo != "o-own" {
			t.Fatalf("after cancel %s/%s coupon is held by %s for %s, want g-own for o-own", tc.gid, tc.order, got.Gid, got.OrderNo)
		}
	}
	if _, err := cl.UnlockCoupon(branchCtx(t, "g-own", "cancel"), branchReq(61, c.Code, "o-own")); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, 61, c.Code, couponv1.Coupon_AVAILABLE)
}

// TestTwoTransactionsOneOrderThroughDTM: an order service retries an order
// under a new gid while the first transaction holds the coupon. The second
// is refused and rolled back without freeing the coupon; the first commits
// and is the only one to use it.
func TestTwoTransactionsOneOrderThroughDTM(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 71)
	req := branchReq(71, c.Code, "o-retried")
	req.Order.Amount = 8000
	locked, proceed := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- e.tcc("retry-g1", []*couponv1.CouponBranchRequest{req}, func(tcc *dtmgrpc.TccGrpc) error {
			if err := tcc.CallBranch(req, e.url("LockCoupon"), e.url("ConsumeCoupon"), e.url("UnlockCoupon"), &couponv1.CouponBranchResponse{}); err != nil {
				return err
			}
			close(locked)
			<-proceed
			return tcc.CallBranch(&emptypb.Empty{}, e.pay.addr+"/pay.Pay/Try", e.pay.addr+"/pay.Pay/Confirm", e.pay.addr+"/pay.Pay/Cancel", &emptypb.Empty{})
		})
	}()
	<-locked
	err := e.tcc("retry-g2", []*couponv1.CouponBranchRequest{req}, func(tcc *dtmgrpc.TccGrpc) error {
		return tcc.CallBranch(req, e.url("LockCoupon"), e.url("ConsumeCoupon"), e.url("UnlockCoupon"), &couponv1.CouponBranchResponse{})
	})
	if err == nil {
		t.Fatal("the second transaction for the order committed, want it refused")
	}
	e.waitDTM(t, "retry-g2", "failed")
	got := e.waitStatus(t, 71, c.Code, couponv1.Coupon_LOCKED)
	if got.Gid != "retry-g1" {
		t.Fatalf("after the second transaction rolled back the coupon is held by %q, want retry-g1", got.Gid)
	}
	close(proceed)
	if err := <-first; err != nil {
		t.Fatalf("first transaction: %v", err)
	}
	got = e.waitStatus(t, 71, c.Code, couponv1.Coupon_USED)
	if got.Gid != "retry-g1" || got.OrderNo != "o-retried" {
		t.Fatalf("used coupon = %+v, want used by retry-g1 for o-retried", got)
	}
	if uses := e.dailyUses(t, 71, tpl.Id); uses != 1 {
		t.Fatalf("daily uses = %d, want 1", uses)
	}
	if l := e.ledger(t, 71, c.Code); l["LOCK"] != 1 || l["CONSUME"] != 1 || l["RELEASE"] != 0 {
		t.Fatalf("ledger = %v, want one LOCK and one CONSUME", l)
	}
}

// waitDTM polls the coordinator's HTTP query API until the global
// transaction reaches status.
func (e *tccEnv) waitDTM(t *testing.T, gid, status string) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("transaction %s to be %s", gid, status), func() bool {
		st, _, err := dtmquery.Client{Addr: e.dtm.HTTPAddr}.Status(context.Background(), gid)
		return err == nil && st == status
	})
}

// TestMalformedSecondCouponRollsBack: a transaction holding a good coupon
// enlists a second branch whose payload names no coupon. The malformed Try
// is Aborted (DTM's FAILURE), its Cancel answers OK, and DTM ends the
// transaction failed with the first coupon AVAILABLE again — instead of
// retrying a refusing Cancel forever with the first coupon LOCKED.
func TestMalformedSecondCouponRollsBack(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 81)
	good := branchReq(81, c.Code, "o-two-coupons")
	bad := branchReq(81, "not-a-code", "o-two-coupons")
	var tryErr error
	err := e.tcc("two-coupons", []*couponv1.CouponBranchRequest{good, bad}, func(tcc *dtmgrpc.TccGrpc) error {
		if err := tcc.CallBranch(good, e.url("LockCoupon"), e.url("ConsumeCoupon"), e.url("UnlockCoupon"), &couponv1.CouponBranchResponse{}); err != nil {
			return err
		}
		tryErr = tcc.CallBranch(bad, e.url("LockCoupon"), e.url("ConsumeCoupon"), e.url("UnlockCoupon"), &couponv1.CouponBranchResponse{})
		return tryErr
	})
	if err == nil {
		t.Fatal("transaction committed with a malformed coupon")
	}
	wantErr(t, tryErr, codes.Aborted, "INVALID_ARGUMENT")
	e.waitDTM(t, "two-coupons", "failed")
	e.waitStatus(t, 81, c.Code, couponv1.Coupon_AVAILABLE)
}

// TestCompensationNeverRefuses: Confirm and Cancel answer OK for any
// payload that cannot name a coupon their transaction locked; a Try with
// such a payload is Aborted with INVALID_ARGUMENT and the field; without
// barrier metadata every branch is InvalidArgument MISSING_BARRIER.
func TestCompensationNeverRefuses(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 91)
	longGID := strings.Repeat("g", 200)
	cases := []struct {
		name  string
		gid   string
		req   *couponv1.CouponBranchRequest
		field string
	}{
		{"no order", "g-p1", &couponv1.CouponBranchRequest{UserId: 91, CouponCode: c.Code}, "order.order_no"},
		{"malformed code", "g-p2", branchReq(91, "bad code", "o-p2"), "coupon_code"},
		{"no user", "g-p3", branchReq(0, c.Code, "o-p3"), "user_id"},
		{"unknown coupon", "g-p4", branchReq(91, "0000000000000ABC", "o-p4"), ""},
		{"too many items", "g-p5", manyItems(branchReq(91, c.Code, "o-p5"), 201), "order.items"},
		{"bad currency", "g-p6", withCurrency(branchReq(91, c.Code, "o-p6"), "yuan"), "order.currency"},
		{"long sku", "g-p7", withSKU(branchReq(91, c.Code, "o-p7"), strings.Repeat("s", 65)), "order.items[0].sku"},
		{"lines above the amount", "g-p8", withLine(branchReq(91, c.Code, "o-p8"), 9001), "order.items"},
		{"gid too long", longGID, branchReq(91, c.Code, "o-p9"), "dtm-gid"},
	}
	cl := e.srv.Coupons
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cl.LockCoupon(branchCtx(t, tc.gid, "try"), tc.req)
			if tc.field == "" {
				wantErr(t, err, codes.Aborted, "COUPON_NOT_FOUND")
			} else {
				wantErr(t, err, codes.Aborted, "INVALID_ARGUMENT")
				if f := fieldOf(err); f != tc.field {
					t.Fatalf("field = %q, want %q", f, tc.field)
				}
			}
			if _, err := cl.UnlockCoupon(branchCtx(t, tc.gid, "cancel"), tc.req); err != nil {
				t.Fatalf("Cancel: %v, want OK", err)
			}
			if _, err := cl.ConsumeCoupon(branchCtx(t, tc.gid+"-c", "confirm"), tc.req); err != nil {
				t.Fatalf("Confirm: %v, want OK", err)
			}
		})
	}
	for _, m := range []func() error{
		func() error { _, err := cl.LockCoupon(ctxT(t), branchReq(91, c.Code, "o-nb")); return err },
		func() error { _, err := cl.ConsumeCoupon(ctxT(t), branchReq(91, c.Code, "o-nb")); return err },
		func() error { _, err := cl.UnlockCoupon(ctxT(t), branchReq(91, c.Code, "o-nb")); return err },
	} {
		wantErr(t, m(), codes.InvalidArgument, "MISSING_BARRIER")
	}
	e.waitStatus(t, 91, c.Code, couponv1.Coupon_AVAILABLE)
	if l := e.ledger(t, 91, c.Code); len(l) != 0 {
		t.Fatalf("ledger = %v, want nothing written", l)
	}
	if n := e.srv.App.Service().Stats().ConfirmWithoutLock; n < int64(len(cases)) {
		t.Fatalf("confirm-without-lock count = %d, want at least %d", n, len(cases))
	}
}

func manyItems(r *couponv1.CouponBranchRequest, n int) *couponv1.CouponBranchRequest {
	for range n {
		r.Order.Items = append(r.Order.Items, &couponv1.OrderItem{Sku: "s", ProductLine: "food", Quantity: 1, Amount: 1})
	}
	return r
}

func withCurrency(r *couponv1.CouponBranchRequest, cur string) *couponv1.CouponBranchRequest {
	r.Order.Currency = cur
	return r
}

func withSKU(r *couponv1.CouponBranchRequest, sku string) *couponv1.CouponBranchRequest {
	r.Order.Items = []*couponv1.OrderItem{{Sku: sku, ProductLine: "food", Quantity: 1, Amount: 100}}
	return r
}

func withLine(r *couponv1.CouponBranchRequest, amount int64) *couponv1.CouponBranchRequest {
	r.Order.Items = []*couponv1.OrderItem{{Sku: "s", ProductLine: "food", Quantity: 1, Amount: amount}}
	return r
}

// fieldOf is the ErrorInfo's field metadata.
func fieldOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.Metadata["field"]
		}
	}
	return ""
}

// TestProductLineCouponOnEligibleAmount: "10 % off food, from 2,000 of
// food" takes 10 % of the food lines only, measures its threshold on them,
// and ListApplicableCoupons quotes what Try will take.
func TestProductLineCouponOnEligibleAmount(t *testing.T) {
	e := newTCC(t)
	now := time.Now()
	tpl, err := e.srv.Admin.CreateTemplate(ctxT(t), &couponv1.CreateTemplateRequest{
		CampaignId: e.campaign.Id, Name: "10% off food", CouponType: couponv1.CouponTemplate_PERCENT_OFF, PercentOff: 10,
		MinOrderAmount: 2000, ProductLines: []string{"food"}, TotalStock: 10,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(time.Hour)), CreatedBy: "alice",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion()}); err != nil {
		t.Fatal(err)
	}
	c := e.claim(t, tpl.Id, 95)
	basket := func(food, other int64) *couponv1.Order {
		return &couponv1.Order{OrderNo: fmt.Sprintf("basket-%d-%d", food, other), UserId: 95, Amount: food + other + 800, Currency: "CNY",
			Items: []*couponv1.OrderItem{
				{Sku: "rice", ProductLine: "food", Quantity: 1, Amount: food},
				{Sku: "phone", ProductLine: "electronics", Quantity: 1, Amount: other},
			}}
	}
	cheap := basket(1500, 8500) // 10,800 in all but only 1,500 of food
	req := &couponv1.CouponBranchRequest{UserId: 95, CouponCode: c.Code, Order: cheap}
	_, err = e.srv.Coupons.LockCoupon(branchCtx(t, "g-basket-1", "try"), req)
	wantErr(t, err, codes.Aborted, "RULE_NOT_MET")
	mixed := basket(3000, 7000)
	apps, err := e.srv.Coupons.ListApplicableCoupons(ctxT(t), &couponv1.ListApplicableCouponsRequest{UserId: 95, Order: mixed})
	if err != nil || len(apps.Coupons) != 1 || apps.Coupons[0].DiscountAmount != 300 {
		t.Fatalf("ListApplicableCoupons = %v, %v; want one coupon giving 300", apps, err)
	}
	req.Order = mixed
	resp, err := e.srv.Coupons.LockCoupon(branchCtx(t, "g-basket-2", "try"), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.DiscountAmount != 300 || resp.PayableAmount != mixed.Amount-300 {
		t.Fatalf("Try = discount %d payable %d, want 300 and %d (10%% of the food only)", resp.DiscountAmount, resp.PayableAmount, mixed.Amount-300)
	}
}

// TestEnumsRangeChecked: an enum value outside its range is refused, not
// cast (258 would read as ACTIVE in one byte).
func TestEnumsRangeChecked(t *testing.T) {
	e := newTCC(t)
	ctx := ctxT(t)
	checks := map[string]error{}
	_, checks["ListCampaigns"] = e.srv.Admin.ListCampaigns(ctx, &couponv1.ListCampaignsRequest{Status: 258})
	_, checks["UpdateCampaign"] = e.srv.Admin.UpdateCampaign(ctx, &couponv1.UpdateCampaignRequest{CampaignId: e.campaign.Id, Status: 258})
	_, checks["ListTemplates"] = e.srv.Admin.ListTemplates(ctx, &couponv1.ListTemplatesRequest{Status: 258})
	_, checks["ListUserCoupons"] = e.srv.Coupons.ListUserCoupons(ctx, &couponv1.ListUserCouponsRequest{UserId: 1, Status: 258})
	_, checks["CreateTemplate"] = e.srv.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{CampaignId: e.campaign.Id, Name: "x",
		CouponType: 258, DiscountAmount: 1, TotalStock: 1, CreatedBy: "alice",
		ValidFrom: timestamppb.Now(), ValidUntil: timestamppb.New(time.Now().Add(time.Hour))})
	for name, err := range checks {
		if code, reason := reasonOf(err); code != codes.InvalidArgument || reason != "INVALID_ARGUMENT" {
			t.Errorf("%s with 258 = %v, want InvalidArgument INVALID_ARGUMENT", name, err)
		}
	}
	got, err := e.srv.Admin.GetCampaign(ctx, &couponv1.GetCampaignRequest{CampaignId: e.campaign.Id})
	if err != nil || got.Status != couponv1.Campaign_ACTIVE {
		t.Fatalf("campaign after the refused update = %v, %v", got, err)
	}
}

// TestLookupCouponsShowsLedger: an operator finds a coupon by code (any
// user) or by user, with its ledger history and the transaction holding it.
func TestLookupCouponsShowsLedger(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 97)
	cl := e.srv.Coupons
	if _, err := cl.LockCoupon(branchCtx(t, "g-look", "try"), branchReq(97, c.Code, "o-look")); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ConsumeCoupon(branchCtx(t, "g-look", "confirm"), branchReq(97, c.Code, "o-look")); err != nil {
		t.Fatal(err)
	}
	byCode, err := e.srv.Admin.LookupCoupons(ctxT(t), &couponv1.LookupCouponsRequest{CouponCode: c.Code})
	if err != nil || len(byCode.Records) != 1 {
		t.Fatalf("LookupCoupons by code = %v, %v", byCode, err)
	}
	rec := byCode.Records[0]
	if rec.Coupon.Status != couponv1.Coupon_USED || rec.Coupon.Gid != "g-look" || len(rec.Ledger) != 2 ||
		rec.Ledger[0].Op != "LOCK" || rec.Ledger[1].Op != "CONSUME" || rec.Ledger[1].Gid != "g-look" || rec.Ledger[1].OrderNo != "o-look" {
		t.Fatalf("record = %v", rec)
	}
	e.claim(t, tpl.Id, 97)
	byUser, err := e.srv.Admin.LookupCoupons(ctxT(t), &couponv1.LookupCouponsRequest{UserId: 97})
	if err != nil || len(byUser.Records) != 2 || len(byUser.Records[0].Ledger) != 0 || len(byUser.Records[1].Ledger) != 2 {
		t.Fatalf("LookupCoupons by user = %v, %v; want the new coupon (no history) then the used one", byUser, err)
	}
	_, err = e.srv.Admin.LookupCoupons(ctxT(t), &couponv1.LookupCouponsRequest{CouponCode: "0000000000000ABC"})
	wantErr(t, err, codes.NotFound, "COUPON_NOT_FOUND")
}

// TestResubmitDoesNotSkipConfirm: an order service resubmits a TCC
// transaction whose Submit answer it lost, while a Confirm is still being
// retried. The coordinator must keep confirming it; DTM v1.19.0 on its own
// marks it succeed at once without calling a single Confirm.
func TestResubmitDoesNotSkipConfirm(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	c := e.claim(t, tpl.Id, 98)
	e.pay.confirmFails.Store(1 << 20)
	if _, err := e.order("resubmit-1", 98, c.Code, 8000); err != nil {
		t.Fatalf("global transaction: %v", err)
	}
	testenv.Eventually(t, 30*time.Second, "the payment Confirm failing", func() bool { return e.pay.count("/pay.Pay/Confirm") > 0 })
	if _, err := dtmgimp.MustGetDtmClient(e.dtm.GRPCAddr).Submit(ctxT(t), &dtmgpb.DtmRequest{Gid: "resubmit-1", TransType: "tcc"}); err != nil {
		t.Fatalf("resubmit: %v", err)
	}
	if st := e.dtmStatus(t, "resubmit-1"); st != "submitted" {
		t.Fatalf("after the resubmit the transaction is %q, want still submitted", st)
	}
	before := e.pay.count("/pay.Pay/Confirm")
	e.pay.confirmFails.Store(0)
	e.waitDTM(t, "resubmit-1", "succeed")
	if e.pay.count("/pay.Pay/Confirm") <= before {
		t.Fatal("the payment was never confirmed after the resubmit")
	}
	e.waitStatus(t, 98, c.Code, couponv1.Coupon_USED)
}

func (e *tccEnv) dtmStatus(t *testing.T, gid string) string {
	t.Helper()
	st, known, err := dtmquery.Client{Addr: e.dtm.HTTPAddr}.Status(context.Background(), gid)
	if err != nil || !known {
		t.Fatalf("query %s: %q, known %v, %v", gid, st, known, err)
	}
	return st
}

// TestLegacyLockMatchedByOrder: a lock written before locks recorded their
// gid (lock_gid empty) is matched by its order alone, so a Confirm naming
// another order leaves it, and the Cancel of its own order releases it.
func TestLegacyLockMatchedByOrder(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	cl := e.srv.Coupons
	c := e.claim(t, tpl.Id, 63)
	if _, err := cl.LockCoupon(branchCtx(t, "g-legacy", "try"), branchReq(63, c.Code, "o-legacy")); err != nil {
		t.Fatal(err)
	}
	// Forget the gid, as a row locked by an earlier version reads.
	forgot := int64(0)
	for _, dsn := range e.srv.Config.MySQL.ShardDSNs {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := db.QueryContext(ctxT(t), "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name REGEXP '^coupon_[0-9]+$'")
		if err != nil {
			t.Fatal(err)
		}
		var tables []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				t.Fatal(err)
			}
			tables = append(tables, name)
		}
		rows.Close()
		for _, table := range tables {
			res, err := db.ExecContext(ctxT(t), "UPDATE `"+table+"` SET lock_gid = '' WHERE code = ?", c.Code)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := res.RowsAffected()
			forgot += n
		}
		db.Close()
	}
	if forgot != 1 {
		t.Fatalf("cleared the gid of %d rows, want 1", forgot)
	}
	// A Confirm of another transaction naming another order reaches the
	// row (the barrier checks no Try before a Confirm; a Cancel after a
	// refused Try would be a null compensation and never get there).
	if _, err := cl.LockCoupon(branchCtx(t, "g-other", "try"), branchReq(63, c.Code, "o-other")); status.Code(err) != codes.Aborted {
		t.Fatalf("try of another order = %v, want Aborted", err)
	}
	if _, err := cl.ConsumeCoupon(branchCtx(t, "g-other", "confirm"), branchReq(63, c.Code, "o-other")); err != nil {
		t.Fatalf("confirm naming another order: %v, want OK", err)
	}
	if got := e.waitStatus(t, 63, c.Code, couponv1.Coupon_LOCKED); got.OrderNo != "o-legacy" {
		t.Fatalf("legacy lock now for order %q, want o-legacy", got.OrderNo)
	}
	if _, err := cl.UnlockCoupon(branchCtx(t, "g-legacy", "cancel"), branchReq(63, c.Code, "o-legacy")); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, 63, c.Code, couponv1.Coupon_AVAILABLE)
}

// TestRepeatedTryMustGetTheLockedDiscount: a Try that finds the coupon
// already locked by its own transaction for its order (a duplicate, or
// another branch of the transaction) is OK only if this order's checks give
// the discount that was locked; a bigger order under the same lock would
// otherwise be paid with the smaller order's discount, or the other way round.
func TestRepeatedTryMustGetTheLockedDiscount(t *testing.T) {
	e := newTCC(t)
	now := time.Now()
	tpl, err := e.srv.Admin.CreateTemplate(ctxT(t), &couponv1.CreateTemplateRequest{
		CampaignId: e.campaign.Id, Name: "10% off", CouponType: couponv1.CouponTemplate_PERCENT_OFF,
		PercentOff: 10, MaxDiscount: 100000, MinOrderAmount: 1000, TotalStock: 10,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)), CreatedBy: "alice",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion()}); err != nil {
		t.Fatal(err)
	}
	cl := e.srv.Coupons
	c := e.claim(t, tpl.Id, 64)
	req := branchReq(64, c.Code, "o-amount")
	got, err := cl.LockCoupon(branchCtx(t, "g-amount", "try"), req)
	if err != nil || got.GetDiscountAmount() != 900 {
		t.Fatalf("try = %v, %v; want discount 900", got, err)
	}
	bigger := branchReq(64, c.Code, "o-amount")
	bigger.Order.Amount = 20000
	second := metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", "g-amount", "dtm-trans_type", "tcc", "dtm-branch_id", "02", "dtm-op", "try")
	for name, ctx := range map[string]context.Context{"duplicate": branchCtx(t, "g-amount", "try"), "another branch": second} {
		_, err := cl.LockCoupon(ctx, bigger)
		if code, reason := reasonOf(err); code != codes.Aborted || reason != "COUPON_NOT_AVAILABLE" {
			t.Fatalf("%s try for a bigger order = %v; want Aborted COUPON_NOT_AVAILABLE", name, err)
		}
	}
	if _, err := cl.LockCoupon(branchCtx(t, "g-amount", "try"), req); err != nil {
		t.Fatalf("duplicate try of the same order: %v, want OK", err)
	}
}
