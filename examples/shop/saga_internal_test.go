package shop

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSagaFailure reads the errors a Saga's Submit comes back with, as DTM
// v1.19 words them.
func TestSagaFailure(t *testing.T) {
	tests := []struct {
		name                   string
		err                    error
		wantBranch, wantReason string
		wantMessage            string
		wantRefusal            bool
	}{
		{
			"shop branch refused",
			status.Error(codes.Aborted, "url:127.0.0.1:1/shop.v1.PaymentService/Debit return failed: INSUFFICIENT_BALANCE: balance 1000 is less than 5500 FAILURE"),
			"127.0.0.1:1/shop.v1.PaymentService/Debit", "INSUFFICIENT_BALANCE", "balance 1000 is less than 5500", true,
		},
		{
			"coupon refused",
			status.Error(codes.Aborted, "url:127.0.0.1:2/coupon.v1.CouponService/UseCoupon return failed: coupon X is USED FAILURE"),
			"127.0.0.1:2/coupon.v1.CouponService/UseCoupon", "", "coupon X is USED", true,
		},
		{
			"timed out",
			status.Error(codes.Aborted, "Timeout after 10 seconds FAILURE"),
			"", "TRANSACTION_FAILED", "Timeout after 10 seconds", false,
		},
		{
			"outcome not known",
			status.Error(codes.Aborted, "wait result not return success: FAILURE"),
			"", "TRANSACTION_FAILED", "wait result not return success:", false,
		},
		{
			"coordinator unreachable",
			status.Error(codes.Unavailable, "connection refused"),
			"", "TRANSACTION_FAILED", "connection refused", false,
		},
		{
			"not a status",
			errors.New("boom"),
			"", "TRANSACTION_FAILED", "boom", false,
		},
		{
			"unknown reason word",
			status.Error(codes.Aborted, "url:u return failed: NOT_A_REASON: x FAILURE"),
			"u", "", "NOT_A_REASON: x", true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			branch, reason, msg, refusal := sagaFailure(tt.err)
			if branch != tt.wantBranch || reason != tt.wantReason || msg != tt.wantMessage || refusal != tt.wantRefusal {
				t.Errorf("sagaFailure = %q, %q, %q, %v; want %q, %q, %q, %v",
					branch, reason, msg, refusal, tt.wantBranch, tt.wantReason, tt.wantMessage, tt.wantRefusal)
			}
		})
	}
}

func TestReturnRequestID(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		orderNo string
		want    string
	}{
		{"o-1", "refund-o-1"},
		{strings.Repeat("b", 57), "refund-" + strings.Repeat("b", 57)},
	}
	for _, tt := range tests {
		if got := returnRequestID(tt.orderNo); got != tt.want {
			t.Errorf("returnRequestID(%q) = %q; want %q", tt.orderNo, got, tt.want)
		}
	}
	got := returnRequestID(long)
	if len(got) != 64 || !strings.HasPrefix(got, "refund-") || got == returnRequestID(long[:63]+"b") {
		t.Errorf("returnRequestID(64 bytes) = %q; want 64 bytes, refund-…, distinct per order", got)
	}
}
