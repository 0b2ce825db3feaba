package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/reconcile"
)

// readOnlyCoupons answers every read with err and fails the test on any
// write.
type readOnlyCoupons struct {
	t   *testing.T
	err error
}

func (c readOnlyCoupons) Unlock(context.Context, reconcile.Lock) error {
	c.t.Error("Unlock called")
	return errors.New("unexpected")
}

func (c readOnlyCoupons) Return(context.Context, reconcile.Refund) error {
	c.t.Error("Return called")
	return errors.New("unexpected")
}

func (c readOnlyCoupons) Coupon(context.Context, int64, string) (reconcile.CouponState, error) {
	return reconcile.CouponState{}, c.err
}

// TestRepairOfUnreadableCoupon: a refunded order whose coupon the coupon
// service will not show as the order's user's (not found, not allowed,
// invalid) goes to a person; retrying cannot change that answer, so it is
// no failed repair that would fail every run. A transient error stays a
// failure, retried by the next run.
func TestRepairOfUnreadableCoupon(t *testing.T) {
	finding := reconcile.Finding{Class: reconcile.ClassRefundCouponNotReturned, OrderNo: "o1", CouponCode: "C1",
		OrderStatus: reconcile.OrderRefunded.String(), UserID: 7, GID: "g1", BranchID: "01"}
	line, err := json.Marshal(finding)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		err        error
		wantStatus string
		wantErr    bool
	}{
		{"not found", status.Error(codes.NotFound, "COUPON_NOT_FOUND"), reconcile.RepairPlanned, false},
		{"permission denied", status.Error(codes.PermissionDenied, "role"), reconcile.RepairPlanned, false},
		{"unavailable", status.Error(codes.Unavailable, "down"), reconcile.RepairFailed, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rp := &reconcile.Repairer{Coupons: readOnlyCoupons{t: t, err: tt.err}}
			var items, report bytes.Buffer
			sum, err := rp.Repair(context.Background(), "2026-12-07", 1, bytes.NewReader(append(line, '\n')), &items, &report)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Repair error %v; want error %v", err, tt.wantErr)
			}
			var it reconcile.RepairItem
			if err := json.Unmarshal(items.Bytes(), &it); err != nil {
				t.Fatalf("item %q: %v", items.String(), err)
			}
			if it.Status != tt.wantStatus || sum[tt.wantStatus] != 1 {
				t.Fatalf("item %+v, summary %v; want status %s", it, sum, tt.wantStatus)
			}
			if !tt.wantErr && (it.Action != reconcile.ActionManual || !strings.Contains(it.Detail, "manual review")) {
				t.Fatalf("item %+v; want a manual review", it)
			}
		})
	}
}
