package coupontcc_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/client/coupontcc"
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
	for _, req := range []*couponv1.CouponBranchRequest{
		{},
		{UserId: 1, CouponCode: "C"},
		{UserId: 1, Order: &couponv1.Order{OrderNo: "o"}},
		{CouponCode: "C", Order: &couponv1.Order{OrderNo: "o"}},
	} {
		if _, err := coupontcc.Enlist(context.Background(), tcc, "127.0.0.1:1", req); err == nil {
			t.Errorf("Enlist(%v) = nil error; want one", req)
		}
	}
}
