package coupontcc_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/participant/shape"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestRefusal(t *testing.T) {
	withReason := func(code codes.Code, reason string) error {
		st, err := status.New(code, "no").WithDetails(&errdetails.ErrorInfo{Domain: "coupon", Reason: reason})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	tests := []struct {
		name       string
		err        error
		wantReason string
		wantOK     bool
	}{
		{"nil", nil, "", false},
		{"plain error", errors.New("boom"), "", false},
		{"unavailable", withReason(codes.Unavailable, "UNAVAILABLE"), "", false},
		{"aborted without reason", status.Error(codes.Aborted, "no"), "", true},
		{"aborted", withReason(codes.Aborted, "RULE_NOT_MET"), "RULE_NOT_MET", true},
		{"wrapped", fmt.Errorf("place order: %w", withReason(codes.Aborted, "COUPON_NOT_AVAILABLE")), "COUPON_NOT_AVAILABLE", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, ok := coupontcc.Refusal(tt.err)
			if reason != tt.wantReason || ok != tt.wantOK {
				t.Errorf("Refusal(%v) = %q, %v; want %q, %v", tt.err, reason, ok, tt.wantReason, tt.wantOK)
			}
		})
	}
}

func TestEnlistRejectsIncompleteRequests(t *testing.T) {
	// No DTM server is needed: a bad request never reaches the network.
	tcc := &dtmgrpc.TccGrpc{}
	const code = "0AKXPNRD80400DDQ"
	order := func(mod func(*couponv1.Order)) *couponv1.Order {
		o := &couponv1.Order{OrderNo: "o-1", UserId: 1, Amount: 6000, Currency: "CNY"}
		mod(o)
		return o
	}
	for _, tc := range []struct {
		req   *couponv1.CouponBranchRequest
		field string
	}{
		{&couponv1.CouponBranchRequest{}, "user_id"},
		{&couponv1.CouponBranchRequest{UserId: 1, CouponCode: "C"}, "coupon_code"},
		{&couponv1.CouponBranchRequest{UserId: 1, CouponCode: code}, "order"},
		{&couponv1.CouponBranchRequest{UserId: 1, Order: &couponv1.Order{OrderNo: "o"}}, "coupon_code"},
		{&couponv1.CouponBranchRequest{CouponCode: code, Order: &couponv1.Order{OrderNo: "o"}}, "user_id"},
		{&couponv1.CouponBranchRequest{UserId: 1, CouponCode: code, Order: order(func(o *couponv1.Order) { o.OrderNo = "" })}, "order.order_no"},
		{&couponv1.CouponBranchRequest{UserId: 1, CouponCode: code, Order: order(func(o *couponv1.Order) { o.Amount = 0 })}, "order.amount"},
		{&couponv1.CouponBranchRequest{UserId: 1, CouponCode: code, Order: order(func(o *couponv1.Order) { o.UserId = 2 })}, "order.user_id"},
		{&couponv1.CouponBranchRequest{UserId: 1, CouponCode: code, Order: order(func(o *couponv1.Order) { o.Currency = "cny" })}, "order.currency"},
		{&couponv1.CouponBranchRequest{UserId: 1, CouponCode: code, Order: order(func(o *couponv1.Order) {
			o.Items = make([]*couponv1.OrderItem, 201)
			for i := range o.Items {
				o.Items[i] = &couponv1.OrderItem{Sku: "s", Quantity: 1, Amount: 1}
			}
		})}, "order.items"},
	} {
		_, err := coupontcc.Enlist(context.Background(), tcc, "127.0.0.1:1", tc.req)
		var fe *shape.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Enlist(%v) = %v; want a *shape.FieldError for %s", tc.req, err, tc.field)
		}
	}
}

// TestEnlistRefusesUncoveredCoupon: a coupon the branch credential does not
// name is refused before DTM holds its branch, whose Confirm and Cancel the
// coupon service would refuse for ever.
func TestEnlistRefusesUncoveredCoupon(t *testing.T) {
	const code = "0AKXPNRD80400DDQ"
	signer := coupontcc.Signer{Caller: "shop", Key: branchcred.Key{ID: "k1", Secret: strings.Repeat("s", branchcred.MinSecret)}}
	req := &couponv1.CouponBranchRequest{UserId: 1, CouponCode: code, Order: &couponv1.Order{OrderNo: "o-1", UserId: 1, Amount: 6000, Currency: "CNY"}}
	other := &couponv1.CouponBranchRequest{UserId: 1, CouponCode: code, Order: &couponv1.Order{OrderNo: "o-2", UserId: 1, Amount: 6000, Currency: "CNY"}}
	for name, tc := range map[string]struct {
		gid, signedGID string
		signed         *couponv1.CouponBranchRequest
	}{
		"another order":       {"g-1", "g-1", other},
		"another transaction": {"g-1", "g-2", req},
	} {
		h, err := coupontcc.BranchHeaders(signer, tc.signedGID, coupontcc.OrderOf(tc.signed))
		if err != nil {
			t.Fatal(err)
		}
		tcc := &dtmgrpc.TccGrpc{}
		tcc.Gid, tcc.BranchHeaders = tc.gid, h
		if _, err := coupontcc.Enlist(context.Background(), tcc, "127.0.0.1:1", req); !errors.Is(err, coupontcc.ErrNotCovered) {
			t.Errorf("%s: Enlist = %v, want ErrNotCovered", name, err)
		}
	}
}
