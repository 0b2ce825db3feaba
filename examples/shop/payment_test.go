package shop_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
)

// TestPaymentBranches drives the payment's branches (TCC, Saga, the
// refund's message) the way DTM does, including its retries and
// reorderings, which the barrier must absorb.
func TestPaymentBranches(t *testing.T) {
	e := mustStart(t, unreachable(t), unreachable(t))
	type call struct {
		op         string // try, confirm, cancel, debit, revert or refund
		amount     int64
		wantCode   codes.Code
		wantReason string
	}
	tests := []struct {
		name        string
		deposit     int64
		calls       []call
		wantBalance int64
		wantFrozen  int64
		wantStatus  shopv1.Payment_Status
	}{
		{"try only", 1000, []call{{op: "try", amount: 300}}, 700, 300, shopv1.Payment_FROZEN},
		{"try confirm", 1000, []call{{op: "try", amount: 300}, {op: "confirm", amount: 300}}, 700, 0, shopv1.Payment_CAPTURED},
		{"repeated try and confirm", 1000, []call{
			{op: "try", amount: 300}, {op: "try", amount: 300}, {op: "confirm", amount: 300}, {op: "confirm", amount: 300},
		}, 700, 0, shopv1.Payment_CAPTURED},
		{"try cancel cancel", 1000, []call{
			{op: "try", amount: 300}, {op: "cancel", amount: 300}, {op: "cancel", amount: 300},
		}, 1000, 0, shopv1.Payment_RELEASED},
		{"null compensation then hanging try", 1000, []call{
			{op: "cancel", amount: 300}, {op: "try", amount: 300},
		}, 1000, 0, shopv1.Payment_STATUS_UNSPECIFIED},
		{"whole balance", 1000, []call{{op: "try", amount: 1000}, {op: "confirm", amount: 1000}}, 0, 0, shopv1.Payment_CAPTURED},
		{"zero amount", 1000, []call{{op: "try", amount: 0}, {op: "confirm", amount: 0}}, 1000, 0, shopv1.Payment_CAPTURED},
		{"insufficient balance then cancel", 1000, []call{
			{op: "try", amount: 1001, wantCode: codes.Aborted, wantReason: "INSUFFICIENT_BALANCE"},
			{op: "cancel", amount: 1001},
		}, 1000, 0, shopv1.Payment_STATUS_UNSPECIFIED},
		{"no account", 0, []call{
			{op: "try", amount: 1, wantCode: codes.Aborted, wantReason: "ACCOUNT_NOT_FOUND"},
		}, 0, 0, shopv1.Payment_STATUS_UNSPECIFIED},
		{"negative amount", 1000, []call{
			{op: "try", amount: -1, wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT"},
		}, 1000, 0, shopv1.Payment_STATUS_UNSPECIFIED},
		// Saga: debit and its compensation.
		{"debit", 1000, []call{{op: "debit", amount: 300}}, 700, 0, shopv1.Payment_CAPTURED},
		{"repeated debit", 1000, []call{{op: "debit", amount: 300}, {op: "debit", amount: 300}}, 700, 0, shopv1.Payment_CAPTURED},
		{"debit revert revert", 1000, []call{
			{op: "debit", amount: 300}, {op: "revert", amount: 300}, {op: "revert", amount: 300},
		}, 1000, 0, shopv1.Payment_RELEASED},
		{"revert before debit then hanging debit", 1000, []call{
			{op: "revert", amount: 300}, {op: "debit", amount: 300},
		}, 1000, 0, shopv1.Payment_STATUS_UNSPECIFIED},
		{"debit refused then revert", 1000, []call{
			{op: "debit", amount: 1001, wantCode: codes.Aborted, wantReason: "INSUFFICIENT_BALANCE"},
			{op: "revert", amount: 1001},
		}, 1000, 0, shopv1.Payment_STATUS_UNSPECIFIED},
		// Refund: the 2-phase message's branch, under the refund's own gid.
		{"debit refund refund", 1000, []call{
			{op: "debit", amount: 300}, {op: "refund", amount: 300}, {op: "refund", amount: 300},
		}, 1000, 0, shopv1.Payment_REFUNDED},
		{"tcc capture then refund", 1000, []call{
			{op: "try", amount: 300}, {op: "confirm", amount: 300}, {op: "refund", amount: 300},
		}, 1000, 0, shopv1.Payment_REFUNDED},
		{"refund after a debit's revert", 1000, []call{
			{op: "debit", amount: 300}, {op: "revert", amount: 300}, {op: "refund", amount: 300},
		}, 1000, 0, shopv1.Payment_RELEASED},
		{"refund of a payment not captured yet", 1000, []call{
			{op: "try", amount: 300},
			{op: "refund", amount: 300, wantCode: codes.FailedPrecondition, wantReason: "PAYMENT_NOT_CAPTURED"},
		}, 700, 300, shopv1.Payment_FROZEN},
		{"refund without a payment", 1000, []call{
			{op: "refund", amount: 300, wantCode: codes.Internal, wantReason: "INTERNAL"},
		}, 1000, 0, shopv1.Payment_STATUS_UNSPECIFIED},
		{"zero amount debit and refund", 1000, []call{{op: "debit", amount: 0}, {op: "refund", amount: 0}}, 1000, 0, shopv1.Payment_REFUNDED},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			userID := int64(1000 + i)
			orderNo := fmt.Sprintf("pay-%d", i)
			gid := "gid-" + orderNo
			if tt.deposit > 0 {
				mustDeposit(t, e, userID, tt.deposit)
			}
			type branch func(context.Context, *shopv1.PaymentBranchRequest, ...grpc.CallOption) (*emptypb.Empty, error)
			// Each op as DTM calls it: the branch, its transaction type
			// and barrier op, and the gid (a refund has its own).
			branches := map[string]struct {
				call             branch
				transType, dtmOp string
				gid              string
			}{
				"try":     {e.Payments.FreezeTry, "tcc", "try", gid},
				"confirm": {e.Payments.CaptureConfirm, "tcc", "confirm", gid},
				"cancel":  {e.Payments.UnfreezeCancel, "tcc", "cancel", gid},
				"debit":   {e.Payments.Debit, "saga", "action", gid},
				"revert":  {e.Payments.DebitRevert, "saga", "compensate", gid},
				"refund":  {e.Payments.Refund, "msg", "action", "refund-" + gid},
			}
			for _, c := range tt.calls {
				b := branches[c.op]
				_, err := b.call(barrierCtx(ctx, b.transType, b.gid, "01", b.dtmOp), &shopv1.PaymentBranchRequest{OrderNo: orderNo, UserId: userID, Amount: c.amount})
				if code, r := reason(err); code != c.wantCode || r != c.wantReason {
					t.Fatalf("%s(%d) = %v; want code %v reason %q", c.op, c.amount, err, c.wantCode, c.wantReason)
				}
			}
			if tt.deposit > 0 {
				if b, f := mustAccount(t, e, userID); b != tt.wantBalance || f != tt.wantFrozen {
					t.Errorf("account = balance %d frozen %d; want %d %d", b, f, tt.wantBalance, tt.wantFrozen)
				}
			}
			if got := paymentStatus(t, e, orderNo); got != tt.wantStatus {
				t.Errorf("payment status = %v; want %v", got, tt.wantStatus)
			}
		})
	}
}

func TestPaymentBranchWithoutBarrier(t *testing.T) {
	e := mustStart(t, unreachable(t), unreachable(t))
	mustDeposit(t, e, 1, 100)
	_, err := e.Payments.FreezeTry(context.Background(), &shopv1.PaymentBranchRequest{OrderNo: "o1", UserId: 1, Amount: 10})
	if code, r := reason(err); code != codes.InvalidArgument || r != "MISSING_BARRIER" {
		t.Fatalf("FreezeTry without DTM metadata = %v; want InvalidArgument MISSING_BARRIER", err)
	}
	if b, f := mustAccount(t, e, 1); b != 100 || f != 0 {
		t.Errorf("account = %d/%d; want 100/0", b, f)
	}
}

func TestPaymentConflict(t *testing.T) {
	e := mustStart(t, unreachable(t), unreachable(t))
	ctx := context.Background()
	mustDeposit(t, e, 1, 1000)
	req := &shopv1.PaymentBranchRequest{OrderNo: "o1", UserId: 1, Amount: 100}
	if _, err := e.Payments.FreezeTry(branchCtx(ctx, "g1", "try"), req); err != nil {
		t.Fatal(err)
	}
	// Another transaction for the same order is refused, and its Cancel
	// must not release the first one's payment.
	_, err := e.Payments.FreezeTry(branchCtx(ctx, "g2", "try"), req)
	if code, r := reason(err); code != codes.Aborted || r != "PAYMENT_CONFLICT" {
		t.Fatalf("second FreezeTry = %v; want Aborted PAYMENT_CONFLICT", err)
	}
	if _, err := e.Payments.UnfreezeCancel(branchCtx(ctx, "g2", "cancel"), req); err != nil {
		t.Fatal(err)
	}
	if b, f := mustAccount(t, e, 1); b != 900 || f != 100 {
		t.Errorf("account = %d/%d; want 900/100", b, f)
	}
	if got := paymentStatus(t, e, "o1"); got != shopv1.Payment_FROZEN {
		t.Errorf("payment = %v; want FROZEN", got)
	}
}
