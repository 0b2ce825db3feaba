package shop_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/examples/shop"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/dtmtest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestRefundOrder refunds orders through the refund's 2-phase message with
// a real coordinator and coupon service: the order REFUNDED, the payment
// REFUNDED with the balance back, and the coupon returned (AVAILABLE, or
// EXPIRED past its expiry, with a ledger RETURN) unless its template keeps
// used coupons.
func TestRefundOrder(t *testing.T) {
	dtm := dtmtest.Start(t)
	coupons := mustCoupons(t)
	e := mustStart(t, dtm.GRPCAddr, coupons.Addr)
	ctx := context.Background()
	returnable := coupons.mustTemplate(t, nil)
	kept := coupons.mustTemplate(t, func(r *couponv1.CreateTemplateRequest) { r.Returnable = proto.Bool(false) })
	// Expires in an hour; the coupon service's clock moves past it.
	expiring := coupons.mustTemplate(t, func(r *couponv1.CreateTemplateRequest) {
		r.ValidUntil = timestamppb.New(coupons.clock.Now().Add(time.Hour))
	})

	// paid places a PAID order of 60.00 for a new user with 100.00, with a
	// coupon of template (none when 0).
	user := int64(0)
	paid := func(t *testing.T, mode string, template int64) (*shopv1.Order, int64) {
		t.Helper()
		user++
		mustDeposit(t, e, user, 10000)
		req := newOrder(fmt.Sprintf("refund-%d", user), user, 6000)
		req.Mode = mode
		if template != 0 {
			req.CouponCode = coupons.mustClaim(t, template, user)
		}
		o, err := e.Orders.CreateOrder(ctx, req)
		if err != nil || o.GetStatus() != shopv1.Order_PAID {
			t.Fatalf("CreateOrder = %v, %v; want PAID", o, err)
		}
		return o, user
	}
	refund := func(t *testing.T, o *shopv1.Order) *shopv1.Order {
		t.Helper()
		r, err := e.Orders.RefundOrder(ctx, &shopv1.RefundOrderRequest{OrderNo: o.GetOrderNo(), Reason: "customer changed their mind"})
		if err != nil {
			t.Fatalf("RefundOrder: %v", err)
		}
		if r.GetStatus() != shopv1.Order_REFUNDED || !strings.HasPrefix(r.GetRefundGid(), "shop-refund-"+o.GetOrderNo()+"-") ||
			r.GetRefundedAt() == nil || r.GetRefundReason() != "customer changed their mind" {
			t.Fatalf("refunded order = %v; want REFUNDED with its refund gid, time and reason", r)
		}
		return r
	}
	// refunded checks that the money is back and the payment REFUNDED.
	refunded := func(t *testing.T, o *shopv1.Order, userID int64) {
		t.Helper()
		if got := paymentStatus(t, e, o.GetOrderNo()); got != shopv1.Payment_REFUNDED {
			t.Errorf("payment = %v; want REFUNDED", got)
		}
		if b, f := mustAccount(t, e, userID); b != 10000 || f != 0 {
			t.Errorf("account = %d/%d; want 10000/0", b, f)
		}
	}

	for _, mode := range []string{shop.ModeTCC, shop.ModeSaga} {
		t.Run(mode+" order with a coupon, refunded twice", func(t *testing.T) {
			o, userID := paid(t, mode, returnable)
			first := refund(t, o)
			refunded(t, o, userID)
			if c := coupons.coupon(t, userID, o.GetCouponCode()); c.GetStatus() != couponv1.Coupon_AVAILABLE {
				t.Errorf("coupon = %v; want AVAILABLE", c.GetStatus())
			}
			want := []string{"LOCK", "CONSUME", "RETURN"}
			if got := coupons.ledger(t, o.GetCouponCode()); !slices.Equal(got, want) {
				t.Errorf("ledger = %v; want %v", got, want)
			}
			again := refund(t, o)
			if again.GetRefundGid() != first.GetRefundGid() {
				t.Errorf("second refund's gid = %s; want the first's, %s", again.GetRefundGid(), first.GetRefundGid())
			}
			refunded(t, o, userID)
			if got := coupons.ledger(t, o.GetCouponCode()); !slices.Equal(got, want) {
				t.Errorf("ledger after the second refund = %v; want %v", got, want)
			}
		})
	}

	t.Run("coupon of a template that keeps used coupons", func(t *testing.T) {
		o, userID := paid(t, shop.ModeTCC, kept)
		refund(t, o)
		refunded(t, o, userID)
		if c := coupons.coupon(t, userID, o.GetCouponCode()); c.GetStatus() != couponv1.Coupon_USED {
			t.Errorf("coupon = %v; want USED", c.GetStatus())
		}
		if got, want := coupons.ledger(t, o.GetCouponCode()), []string{"LOCK", "CONSUME"}; !slices.Equal(got, want) {
			t.Errorf("ledger = %v; want %v", got, want)
		}
	})

	t.Run("without a coupon", func(t *testing.T) {
		o, userID := paid(t, shop.ModeTCC, 0)
		refund(t, o)
		refunded(t, o, userID)
	})

	t.Run("two refunds at once", func(t *testing.T) {
		o, userID := paid(t, shop.ModeTCC, returnable)
		var wg sync.WaitGroup
		got := make([]*shopv1.Order, 2)
		for i := range got {
			wg.Go(func() {
				r, err := e.Orders.RefundOrder(ctx, &shopv1.RefundOrderRequest{OrderNo: o.GetOrderNo()})
				if err != nil {
					t.Errorf("RefundOrder %d: %v", i, err)
				}
				got[i] = r
			})
		}
		wg.Wait()
		if got[0].GetStatus() != shopv1.Order_REFUNDED || got[0].GetRefundGid() != got[1].GetRefundGid() {
			t.Fatalf("refunds = %v and %v; want both REFUNDED by one refund", got[0], got[1])
		}
		refunded(t, o, userID)
		if got, want := coupons.ledger(t, o.GetCouponCode()), []string{"LOCK", "CONSUME", "RETURN"}; !slices.Equal(got, want) {
			t.Errorf("ledger = %v; want %v", got, want)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		mustDeposit(t, e, 99, 1000)
		cancelled, err := e.Orders.CreateOrder(ctx, newOrder("refund-poor", 99, 6000))
		if err != nil || cancelled.GetStatus() != shopv1.Order_CANCELLED {
			t.Fatalf("CreateOrder = %v, %v; want CANCELLED", cancelled, err)
		}
		tests := []struct {
			name       string
			req        *shopv1.RefundOrderRequest
			wantCode   codes.Code
			wantReason string
		}{
			{"cancelled order", &shopv1.RefundOrderRequest{OrderNo: "refund-poor"}, codes.FailedPrecondition, "ORDER_NOT_REFUNDABLE"},
			{"unknown order", &shopv1.RefundOrderRequest{OrderNo: "refund-none"}, codes.NotFound, "NOT_FOUND"},
			{"malformed order_no", &shopv1.RefundOrderRequest{OrderNo: "a b"}, codes.InvalidArgument, "INVALID_ARGUMENT"},
			{"long reason", &shopv1.RefundOrderRequest{OrderNo: "refund-poor", Reason: strings.Repeat("x", 256)}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		}
		for _, tt := range tests {
			_, err := e.Orders.RefundOrder(ctx, tt.req)
			if code, r := reason(err); code != tt.wantCode || r != tt.wantReason {
				t.Errorf("%s: RefundOrder = %v; want %v %s", tt.name, err, tt.wantCode, tt.wantReason)
			}
		}
		if b, _ := mustAccount(t, e, 99); b != 1000 {
			t.Errorf("balance = %d; want 1000", b)
		}
	})

	// Last: it moves the coupon service's clock past the expiring
	// template's end.
	t.Run("coupon past its expiry", func(t *testing.T) {
		o, userID := paid(t, shop.ModeTCC, expiring)
		coupons.clock.Advance(2 * time.Hour)
		refund(t, o)
		refunded(t, o, userID)
		if c := coupons.coupon(t, userID, o.GetCouponCode()); c.GetStatus() != couponv1.Coupon_EXPIRED {
			t.Errorf("coupon = %v; want EXPIRED", c.GetStatus())
		}
		if got, want := coupons.ledger(t, o.GetCouponCode()), []string{"LOCK", "CONSUME", "RETURN"}; !slices.Equal(got, want) {
			t.Errorf("ledger = %v; want %v", got, want)
		}
	})
}

// TestQueryPrepared is the back-check DTM makes of a refund's message: a
// gid whose local transaction never committed is rolled back, for good.
func TestQueryPrepared(t *testing.T) {
	e := mustStart(t, unreachable(t), unreachable(t))
	ctx := context.Background()
	for range 2 {
		_, err := e.Orders.QueryPrepared(barrierCtx(ctx, "msg", "shop-refund-x-1", "00", "msg"), &emptypb.Empty{})
		if code, _ := reason(err); code != codes.Aborted {
			t.Errorf("QueryPrepared of a refund that never committed = %v; want Aborted", err)
		}
	}
	_, err := e.Orders.QueryPrepared(ctx, &emptypb.Empty{})
	if code, r := reason(err); code != codes.InvalidArgument || r != "MISSING_BARRIER" {
		t.Errorf("QueryPrepared without DTM metadata = %v; want InvalidArgument MISSING_BARRIER", err)
	}
}
