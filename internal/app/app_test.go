package app_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/logger"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestMain(m *testing.M) {
	logger.InitLog("fatal") // the DTM client logs every call
	os.Exit(m.Run())
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// errorInfo returns the code and the ErrorInfo of a gRPC error.
func errorInfo(err error) (codes.Code, *errdetails.ErrorInfo) {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), ei
		}
	}
	return st.Code(), &errdetails.ErrorInfo{}
}

func wantRefused(t *testing.T, what string, err error, code codes.Code, reason string) {
	t.Helper()
	got, ei := errorInfo(err)
	if got != code || ei.GetReason() != reason || ei.GetDomain() != "coupon" {
		t.Fatalf("%s: got %s %q (domain %q, %v), want %s %q in domain coupon", what, got, ei.GetReason(), ei.GetDomain(), err, code, reason)
	}
}

// template creates a campaign and a template as alice and has bob approve
// it; it returns the ACTIVE template.
func template(t *testing.T, srv *coupontest.Server, stock int64) *couponv1.CouponTemplate {
	t.Helper()
	ctx := ctxT(t)
	now := time.Now()
	camp, err := srv.Admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "ops " + t.Name(), CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign as alice: %v", err)
	}
	tpl, err := srv.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: camp.Id, Name: "5 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: stock, PerUserLimit: 100,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
		CreatedBy: "alice",
	})
	if err != nil {
		t.Fatalf("CreateTemplate as alice: %v", err)
	}
	tpl, err = srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, ApprovedBy: "bob"})
	if err != nil {
		t.Fatalf("ApproveTemplate as bob: %v", err)
	}
	return tpl
}

func claim(t *testing.T, srv *coupontest.Server, tplID, user int64) *couponv1.Coupon {
	t.Helper()
	c, err := srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{
		RequestId: fmt.Sprintf("ops-%d-%d", user, time.Now().UnixNano()), UserId: user, TemplateId: tplID})
	if err != nil {
		t.Fatalf("ClaimCoupon as app: %v", err)
	}
	return c
}

func TestCallersAndRoles(t *testing.T) {
	srv := coupontest.Start(t)
	ctx := ctxT(t)
	list := &couponv1.ListCampaignsRequest{}
	branch := &couponv1.CouponBranchRequest{UserId: 1, CouponCode: "C1", Order: &couponv1.Order{OrderNo: "o-1", UserId: 1, Amount: 100}}

	_, err := srv.Admin.ListCampaigns(coupontest.WithoutToken(ctx), list)
	wantRefused(t, "AdminService without a credential", err, codes.Unauthenticated, "UNAUTHENTICATED")
	_, err = srv.AdminAs("not-a-token").ListCampaigns(ctx, list)
	wantRefused(t, "AdminService with an unknown token", err, codes.Unauthenticated, "UNAUTHENTICATED")
	_, err = srv.AdminAs(coupontest.TokenApp).ListCampaigns(ctx, list)
	wantRefused(t, "AdminService as local-app", err, codes.PermissionDenied, "PERMISSION_DENIED")
	_, err = srv.AdminAs(coupontest.TokenShop).ListCampaigns(ctx, list)
	wantRefused(t, "AdminService as local-shop", err, codes.PermissionDenied, "PERMISSION_DENIED")
	// Only the order role reaches a branch method: every other role, and no
	// credential at all, is refused on every one of them.
	for _, who := range []struct{ name, token, reason string }{
		{"local-app", coupontest.TokenApp, "PERMISSION_DENIED"},
		{"alice (admin)", coupontest.TokenAlice, "PERMISSION_DENIED"},
		{"no credential", "", "UNAUTHENTICATED"},
	} {
		conn := srv.Dial(t)
		for _, m := range auth.Branches {
			var req, resp any = branch, new(couponv1.CouponBranchResponse)
			if m == couponv1.CouponService_ReturnCoupon_FullMethodName {
				req, resp = &couponv1.ReturnCouponRequest{RequestId: "r-1", UserId: 1, CouponCode: "C1", OrderNo: "o-1"}, new(couponv1.ReturnCouponResponse)
			}
			cctx := ctx
			if who.token != "" {
				cctx = coupontest.AsToken(ctx, who.token)
			}
			code := codes.PermissionDenied
			if who.reason == "UNAUTHENTICATED" {
				code = codes.Unauthenticated
			}
			err := conn.Invoke(cctx, m, req, resp)
			wantRefused(t, m+" as "+who.name, err, code, who.reason)
		}
	}
	_, err = srv.CouponsAs(coupontest.TokenShop).ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: "r", UserId: 1, TemplateId: 1})
	wantRefused(t, "ClaimCoupon as local-shop", err, codes.PermissionDenied, "PERMISSION_DENIED")
	_, err = srv.CouponsAs("").GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: 1})
	wantRefused(t, "GetTemplate without a credential", err, codes.Unauthenticated, "UNAUTHENTICATED")

	// With the role the call reaches the domain.
	if _, err := srv.AdminAs(coupontest.TokenAlice).ListCampaigns(ctx, list); err != nil {
		t.Fatalf("ListCampaigns as alice: %v", err)
	}
	if _, err := srv.CouponsAs(coupontest.TokenShop).GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: 1}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetTemplate as local-shop: %v, want NotFound (served)", err)
	}
	// The shop's Lock is served: without DTM's barrier metadata the domain refuses it.
	_, err = srv.CouponsAs(coupontest.TokenShop).LockCoupon(ctx, branch)
	if code, ei := errorInfo(err); code == codes.PermissionDenied || code == codes.Unauthenticated {
		t.Fatalf("LockCoupon as local-shop refused by auth: %s %s", code, ei.GetReason())
	}

	// Health and reflection need no credential.
	open := srv.Dial(t)
	testenv.Eventually(t, 10*time.Second, "health SERVING without a credential", func() bool {
		r, err := healthpb.NewHealthClient(open).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && r.Status == healthpb.HealthCheckResponse_SERVING
	})
	stream, err := reflectionpb.NewServerReflectionClient(open).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("reflection send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil || len(resp.GetListServicesResponse().GetService()) == 0 {
		t.Fatalf("reflection without a credential: %v, %v", resp, err)
	}
}

// TestTCCWithBranchHeaders runs order transactions through a real
// coordinator: with the shop's token on its Try and its branch credential in
// the branch headers, DTM's Confirm is accepted and the coupon ends USED;
// without a token, or with a caller lacking the order role, the Try is
// refused and the transaction rolls back.
func TestTCCWithBranchHeaders(t *testing.T) {
	dtm := dtmtest.Start(t)
	srv := coupontest.Start(t)
	tpl := template(t, srv, 10)
	// order runs one transaction whose Try carries token ("" none).
	order := func(t *testing.T, user int64, code, token string) (*couponv1.CouponBranchResponse, error) {
		t.Helper()
		gid := fmt.Sprintf("ops-%d-%d", user, time.Now().UnixNano())
		req := &couponv1.CouponBranchRequest{UserId: user, CouponCode: code,
			Order: &couponv1.Order{OrderNo: gid, UserId: user, Amount: 8000, Currency: "CNY"}}
		var resp *couponv1.CouponBranchResponse
		err := dtmgrpc.TccGlobalTransaction2(dtm.GRPCAddr, gid, func(tcc *dtmgrpc.TccGrpc) {
			tcc.BranchHeaders = coupontest.BranchHeaders(t, gid, coupontcc.OrderOf(req))
			tcc.WaitResult = true
		}, func(tcc *dtmgrpc.TccGrpc) error {
			ctx := ctxT(t)
			if token != "" {
				ctx = coupontcc.WithToken(ctx, token)
			}
			var err error
			resp, err = coupontcc.Enlist(ctx, tcc, srv.Addr, req)
			return err
		})
		return resp, err
	}
	status := func(t *testing.T, user int64, code string) couponv1.Coupon_Status {
		t.Helper()
		c, err := srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: user, CouponCode: code})
		if err != nil {
			t.Fatalf("GetCoupon: %v", err)
		}
		return c.Status
	}

	t.Run("with local-shop", func(t *testing.T) {
		c := claim(t, srv, tpl.Id, 7001)
		resp, err := order(t, 7001, c.Code, coupontest.TokenShop)
		if err != nil {
			t.Fatalf("transaction with BranchHeaders: %v", err)
		}
		if resp.DiscountAmount != 500 || resp.PayableAmount != 7500 {
			t.Fatalf("Try: discount %d payable %d, want 500 and 7500", resp.DiscountAmount, resp.PayableAmount)
		}
		testenv.Eventually(t, 30*time.Second, "coupon USED after commit", func() bool { return status(t, 7001, c.Code) == couponv1.Coupon_USED })
	})
	t.Run("without credential", func(t *testing.T) {
		c := claim(t, srv, tpl.Id, 7002)
		_, err := order(t, 7002, c.Code, "")
		// The branch credential alone does not make a Try.
		wantRefused(t, "Try with only the branch credential", err, codes.PermissionDenied, "PERMISSION_DENIED")
		if got := status(t, 7002, c.Code); got != couponv1.Coupon_AVAILABLE {
			t.Fatalf("coupon %s after the refused Try, want AVAILABLE", got)
		}
	})
	t.Run("as local-app", func(t *testing.T) {
		c := claim(t, srv, tpl.Id, 7003)
		_, err := order(t, 7003, c.Code, coupontest.TokenApp)
		wantRefused(t, "Try as local-app", err, codes.PermissionDenied, "PERMISSION_DENIED")
		if got := status(t, 7003, c.Code); got != couponv1.Coupon_AVAILABLE {
			t.Fatalf("coupon %s after the refused Try, want AVAILABLE", got)
		}
	})
}
