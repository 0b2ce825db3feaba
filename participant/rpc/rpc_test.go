package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// reasonOf returns the gRPC code and ErrorInfo reason of err.
func reasonOf(err error) (codes.Code, string) {
	st, ok := status.FromError(err)
	if !ok {
		return codes.Unknown, ""
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), ei.Reason
		}
	}
	return st.Code(), ""
}

func wantErr(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	gotCode, gotReason := reasonOf(err)
	if gotCode != code || gotReason != reason {
		t.Fatalf("error = %v (code %s, reason %q), want code %s reason %q", err, gotCode, gotReason, code, reason)
	}
}

type fixture struct {
	srv      *coupontest.Server
	campaign *couponv1.Campaign
}

// start is coupontest.Start, skipped under -short.
func start(tb testing.TB, opts ...coupontest.Option) *coupontest.Server {
	tb.Helper()
	needsServices(tb)
	return coupontest.Start(tb, opts...)
}

// needsServices skips a test under -short: the package's tests run the
// service over MariaDB, Redis and, for transactions, DTM.
func needsServices(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs MariaDB and Redis")
	}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := start(t)
	now := time.Now()
	c, err := srv.Admin.CreateCampaign(ctxT(t), &couponv1.CreateCampaignRequest{
		Name: "spring sale", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	return &fixture{srv: srv, campaign: c}
}

func (f *fixture) template(t *testing.T, stock int64, perUser int32) *couponv1.CouponTemplate {
	t.Helper()
	now := time.Now()
	tpl, err := f.srv.Admin.CreateTemplate(ctxT(t), &couponv1.CreateTemplateRequest{
		CampaignId: f.campaign.Id, Name: "5 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: stock, PerUserLimit: perUser,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
		CreatedBy: "alice",
	})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	tpl, err = f.srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion()})
	if err != nil {
		t.Fatalf("ApproveTemplate: %v", err)
	}
	if tpl.Status != couponv1.CouponTemplate_ACTIVE {
		t.Fatalf("status after approval = %s, want ACTIVE", tpl.Status)
	}
	return tpl
}

func (f *fixture) stats(t *testing.T, id int64) *couponv1.TemplateStats {
	t.Helper()
	st, err := f.srv.Admin.GetTemplateStats(ctxT(t), &couponv1.GetTemplateStatsRequest{TemplateId: id})
	if err != nil {
		t.Fatalf("GetTemplateStats: %v", err)
	}
	return st
}

// claimAll runs n claims at once and counts successes and refusal reasons.
func claimAll(t *testing.T, cl couponv1.CouponServiceClient, n int, req func(i int) *couponv1.ClaimCouponRequest) (map[string]int, []*couponv1.Coupon) {
	t.Helper()
	return concurrently(t, n, func(i int) (*couponv1.Coupon, error) { return cl.ClaimCoupon(ctxT(t), req(i)) })
}

// concurrently starts n calls at once and counts successes and refusal
// reasons ("Code/REASON").
func concurrently(t *testing.T, n int, call func(i int) (*couponv1.Coupon, error)) (map[string]int, []*couponv1.Coupon) {
	t.Helper()
	var (
		mu      sync.Mutex
		reasons = map[string]int{}
		got     []*couponv1.Coupon
		wg      sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, err := call(i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				code, reason := reasonOf(err)
				reasons[fmt.Sprintf("%s/%s", code, reason)]++
				return
			}
			got = append(got, c)
		}()
	}
	close(start)
	wg.Wait()
	return reasons, got
}

func TestClaimNeverOversells(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 50, 0)
	reasons, got := claimAll(t, f.srv.Coupons, 200, func(i int) *couponv1.ClaimCouponRequest {
		return &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("r-%d", i), UserId: int64(1000 + i), TemplateId: tpl.Id}
	})
	if len(got) != 50 || reasons["FailedPrecondition/SOLD_OUT"] != 150 || len(reasons) != 1 {
		t.Fatalf("got %d coupons and refusals %v, want 50 coupons and 150 FailedPrecondition/SOLD_OUT", len(got), reasons)
	}
	codes := map[string]bool{}
	for _, c := range got {
		if codes[c.Code] {
			t.Fatalf("code %s issued twice", c.Code)
		}
		codes[c.Code] = true
		if c.Status != couponv1.Coupon_AVAILABLE {
			t.Errorf("coupon %s status = %s, want AVAILABLE", c.Code, c.Status)
		}
	}
	st := f.stats(t, tpl.Id)
	if st.Issued != 50 || st.Available != 50 || st.RemainingStock != 0 || st.TotalStock != 50 {
		t.Fatalf("stats = %+v, want issued 50, available 50, remaining 0, total 50", st)
	}
}

func TestClaimPerUserLimitIsExact(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 1000, 3)
	reasons, got := claimAll(t, f.srv.Coupons, 50, func(i int) *couponv1.ClaimCouponRequest {
		return &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("u-%d", i), UserId: 42, TemplateId: tpl.Id}
	})
	if len(got) != 3 || reasons["FailedPrecondition/USER_LIMIT_REACHED"] != 47 {
		t.Fatalf("got %d coupons and refusals %v, want 3 and 47 USER_LIMIT_REACHED", len(got), reasons)
	}
	list, err := f.srv.Coupons.ListUserCoupons(ctxT(t), &couponv1.ListUserCouponsRequest{UserId: 42})
	if err != nil {
		t.Fatalf("ListUserCoupons: %v", err)
	}
	if len(list.Coupons) != 3 {
		t.Fatalf("user has %d coupons, want 3", len(list.Coupons))
	}
	// Stock given back by the refused claims: only 3 units are gone.
	if st := f.stats(t, tpl.Id); st.RemainingStock != 997 || st.Issued != 3 {
		t.Fatalf("stats = %+v, want remaining 997, issued 3", st)
	}
}

func TestClaimSameRequestIDConcurrently(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 100, 0)
	reasons, got := claimAll(t, f.srv.Coupons, 20, func(int) *couponv1.ClaimCouponRequest {
		return &couponv1.ClaimCouponRequest{RequestId: "same-request", UserId: 7, TemplateId: tpl.Id}
	})
	if len(got) != 20 || len(reasons) != 0 {
		t.Fatalf("got %d answers and errors %v, want 20 answers", len(got), reasons)
	}
	for _, c := range got {
		if c.Code != got[0].Code {
			t.Fatalf("retries returned codes %s and %s, want one coupon", got[0].Code, c.Code)
		}
	}
	if st := f.stats(t, tpl.Id); st.Issued != 1 || st.RemainingStock != 99 {
		t.Fatalf("stats = %+v, want issued 1, remaining 99", st)
	}
	// The same request ID for another template, or another user, is a conflict.
	other := f.template(t, 10, 0)
	_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "same-request", UserId: 7, TemplateId: other.Id})
	wantErr(t, err, codes.FailedPrecondition, "REQUEST_ID_CONFLICT")
	_, err = f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "same-request", UserId: 8, TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "REQUEST_ID_CONFLICT")
	if st := f.stats(t, other.Id); st.Issued != 0 || st.RemainingStock != 10 {
		t.Fatalf("conflicting request wrote: stats %+v", st)
	}
}

func TestClaimRetryAfterRedisForgetsRequest(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 10, 0)
	req := &couponv1.ClaimCouponRequest{RequestId: "retry-1", UserId: 9, TemplateId: tpl.Id}
	first, err := f.srv.Coupons.ClaimCoupon(ctxT(t), req)
	if err != nil {
		t.Fatalf("ClaimCoupon: %v", err)
	}
	// Redis loses everything; the shard's unique key still knows the request.
	if err := f.srv.App.Redis().Del(ctxT(t), f.srv.Prefix+"req:retry-1").Err(); err != nil {
		t.Fatal(err)
	}
	again, err := f.srv.Coupons.ClaimCoupon(ctxT(t), req)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if again.Code != first.Code {
		t.Fatalf("retry code = %s, want %s", again.Code, first.Code)
	}
}

func TestBadInputsWriteNothing(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 5, 0)
	now := time.Now()
	window := func(r *couponv1.CreateTemplateRequest) *couponv1.CreateTemplateRequest {
		r.ValidFrom, r.ValidUntil = timestamppb.New(now), timestamppb.New(now.Add(time.Hour))
		if r.CampaignId == 0 {
			r.CampaignId = f.campaign.Id
		}
		return r
	}
	pending, err := f.srv.Admin.CreateTemplate(ctxT(t), window(&couponv1.CreateTemplateRequest{
		Name: "pending", CouponType: couponv1.CouponTemplate_PERCENT_OFF, PercentOff: 10, TotalStock: 5, CreatedBy: "alice",
	}))
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
	}{
		{"negative stock", func() error {
			_, err := f.srv.Admin.CreateTemplate(ctxT(t), window(&couponv1.CreateTemplateRequest{
				Name: "x", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 1, TotalStock: -1, CreatedBy: "alice"}))
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"percent over 100", func() error {
			_, err := f.srv.Admin.CreateTemplate(ctxT(t), window(&couponv1.CreateTemplateRequest{
				Name: "x", CouponType: couponv1.CouponTemplate_PERCENT_OFF, PercentOff: 101, TotalStock: 1, CreatedBy: "alice"}))
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"discount above threshold", func() error {
			_, err := f.srv.Admin.CreateTemplate(ctxT(t), window(&couponv1.CreateTemplateRequest{
				Name: "x", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 600, MinOrderAmount: 500, TotalStock: 1, CreatedBy: "alice"}))
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"bad rule", func() error {
			_, err := f.srv.Admin.CreateTemplate(ctxT(t), window(&couponv1.CreateTemplateRequest{
				Name: "x", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 1, TotalStock: 1, CreatedBy: "alice",
				UsageRule: "order.amount >="}))
			return err
		}, codes.InvalidArgument, "INVALID_RULE"},
		{"unknown campaign", func() error {
			_, err := f.srv.Admin.CreateTemplate(ctxT(t), window(&couponv1.CreateTemplateRequest{
				CampaignId: 999999, Name: "x", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 1, TotalStock: 1, CreatedBy: "alice"}))
			return err
		}, codes.NotFound, "NOT_FOUND"},
		{"missing request id", func() error {
			_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{UserId: 1, TemplateId: tpl.Id})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"unknown template", func() error {
			_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "u1", UserId: 1, TemplateId: 987654})
			return err
		}, codes.NotFound, "NOT_FOUND"},
		{"malformed template id", func() error {
			_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "m1", UserId: 1, TemplateId: -3})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"malformed user id", func() error {
			_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "m2", UserId: 0, TemplateId: tpl.Id})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"malformed coupon code", func() error {
			_, err := f.srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: 1, CouponCode: "nope"})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"approve own template", func() error {
			_, err := f.srv.Admin.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: pending.Id, Version: pending.GetVersion()})
			return err
		}, codes.FailedPrecondition, "APPROVER_IS_CREATOR"},
		{"approve in someone else's name", func() error {
			_, err := f.srv.Admin.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: pending.Id, Version: pending.GetVersion(), ApprovedBy: "bob"})
			return err
		}, codes.PermissionDenied, "IDENTITY_MISMATCH"},
		{"claim pending template", func() error {
			_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "p1", UserId: 1, TemplateId: pending.Id})
			return err
		}, codes.FailedPrecondition, "TEMPLATE_NOT_ACTIVE"},
		{"add stock without request id", func() error {
			_, err := f.srv.Admin.AddStock(ctxT(t), &couponv1.AddStockRequest{TemplateId: tpl.Id, Amount: 5})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"add negative stock", func() error {
			_, err := f.srv.Admin.AddStock(ctxT(t), &couponv1.AddStockRequest{RequestId: "s1", TemplateId: tpl.Id, Amount: -5})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"campaign window reversed", func() error {
			_, err := f.srv.Admin.CreateCampaign(ctxT(t), &couponv1.CreateCampaignRequest{Name: "x", CreatedBy: "alice",
				StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(-time.Hour))})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.call(), tc.code, tc.reason) })
	}
	// Nothing was written by any of them.
	if st := f.stats(t, tpl.Id); st.Issued != 0 || st.TotalStock != 5 || st.RemainingStock != 5 {
		t.Fatalf("stats after bad inputs = %+v, want untouched", st)
	}
	if st := f.stats(t, pending.Id); st.Issued != 0 {
		t.Fatalf("pending template issued %d", st.Issued)
	}
	list, err := f.srv.Admin.ListTemplates(ctxT(t), &couponv1.ListTemplatesRequest{CampaignId: f.campaign.Id})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Templates) != 2 {
		t.Fatalf("campaign has %d templates, want 2 (bad creates wrote rows)", len(list.Templates))
	}
}

func TestAddStockIsIdempotent(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 1, 0)
	if _, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "a", UserId: 1, TemplateId: tpl.Id}); err != nil {
		t.Fatal(err)
	}
	_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "b", UserId: 2, TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "SOLD_OUT")
	for i := range 3 {
		res, err := f.srv.Admin.AddStock(ctxT(t), &couponv1.AddStockRequest{RequestId: "top-up-1", TemplateId: tpl.Id, Amount: 10})
		if err != nil {
			t.Fatalf("AddStock #%d: %v", i, err)
		}
		if res.TotalStock != 11 || res.RemainingStock != 10 || res.Replayed != (i > 0) {
			t.Fatalf("AddStock #%d = %+v, want total 11, remaining 10, replayed %v", i, res, i > 0)
		}
	}
	_, err = f.srv.Admin.AddStock(ctxT(t), &couponv1.AddStockRequest{RequestId: "top-up-1", TemplateId: tpl.Id, Amount: 11})
	wantErr(t, err, codes.FailedPrecondition, "REQUEST_ID_CONFLICT")
	if _, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "b", UserId: 2, TemplateId: tpl.Id}); err != nil {
		t.Fatalf("claim after top-up: %v", err)
	}
}

func TestStockRebuiltAfterRedisLoss(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 30, 0)
	_, got := claimAll(t, f.srv.Coupons, 10, func(i int) *couponv1.ClaimCouponRequest {
		return &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("before-%d", i), UserId: int64(100 + i), TemplateId: tpl.Id}
	})
	if len(got) != 10 {
		t.Fatalf("got %d coupons before the loss, want 10", len(got))
	}
	// Redis loses every key of this service (our prefix only: Redis is shared).
	var cursor uint64
	for {
		keys, next, err := f.srv.App.Redis().Scan(ctxT(t), cursor, f.srv.Prefix+"*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > 0 {
			if err := f.srv.App.Redis().Del(ctxT(t), keys...).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	reasons, got := claimAll(t, f.srv.Coupons, 40, func(i int) *couponv1.ClaimCouponRequest {
		return &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("after-%d", i), UserId: int64(200 + i), TemplateId: tpl.Id}
	})
	if len(got) != 20 || reasons["FailedPrecondition/SOLD_OUT"] != 20 {
		t.Fatalf("after the loss got %d coupons and %v, want 20 and 20 SOLD_OUT", len(got), reasons)
	}
	if st := f.stats(t, tpl.Id); st.Issued != 30 || st.RemainingStock != 0 {
		t.Fatalf("stats = %+v, want issued 30, remaining 0", st)
	}
}

func TestTemplateLifecycle(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 10, 0)
	paused := couponv1.CouponTemplate_PAUSED
	if _, err := f.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, Status: paused}); err != nil {
		t.Fatalf("pause: %v", err)
	}
	_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "x", UserId: 1, TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "TEMPLATE_NOT_ACTIVE")
	amount := int64(100)
	_, err = f.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, DiscountAmount: &amount})
	wantErr(t, err, codes.FailedPrecondition, "TEMPLATE_NOT_EDITABLE")
	_, err = f.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, Status: couponv1.CouponTemplate_PENDING_APPROVAL})
	wantErr(t, err, codes.FailedPrecondition, "INVALID_STATE_TRANSITION")
	if _, err := f.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, Status: couponv1.CouponTemplate_ACTIVE}); err != nil {
		t.Fatalf("resume: %v", err)
	}
	c, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "x", UserId: 1, TemplateId: tpl.Id})
	if err != nil {
		t.Fatalf("claim after resume: %v", err)
	}
	got, err := f.srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: 1, CouponCode: c.Code})
	if err != nil || got.Id != c.Id {
		t.Fatalf("GetCoupon = %v, %v; want coupon %d", got, err, c.Id)
	}
	_, err = f.srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: 2, CouponCode: c.Code})
	wantErr(t, err, codes.NotFound, "COUPON_NOT_FOUND")
	if errors.Is(err, context.Canceled) {
		t.Fatal("unexpected cancel")
	}
}

func TestClaimGivesStockBackWhenInsertFails(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 5, 0)
	const user = 77
	db, n := f.srv.App.Store().UserShardForTest(user)
	table := fmt.Sprintf("coupon_%04d", n)
	if _, err := db.ExecContext(ctxT(t), "RENAME TABLE "+table+" TO "+table+"_away"); err != nil {
		t.Fatal(err)
	}
	_, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "broken-1", UserId: user, TemplateId: tpl.Id})
	if _, err2 := db.ExecContext(context.Background(), "RENAME TABLE "+table+"_away TO "+table); err2 != nil {
		t.Fatal(err2)
	}
	if err == nil {
		t.Fatal("claim succeeded with the coupon table gone")
	}
	if st := f.stats(t, tpl.Id); st.RemainingStock != 5 || st.Issued != 0 {
		t.Fatalf("after the failed insert stats = %+v, want remaining 5 (stock given back), issued 0", st)
	}
	c, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "broken-1", UserId: user, TemplateId: tpl.Id})
	if err != nil {
		t.Fatalf("retry after the fault: %v", err)
	}
	if st := f.stats(t, tpl.Id); st.RemainingStock != 4 || st.Issued != 1 {
		t.Fatalf("after the retry stats = %+v, want remaining 4, issued 1 (coupon %s)", st, c.Code)
	}
}
