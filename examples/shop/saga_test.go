package shop_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc/codes"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/examples/shop"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/janitor"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestSagaOrderWithoutCoupon(t *testing.T) {
	dtm := dtmtest.Start(t)
	e := mustStart(t, dtm.GRPCAddr, unreachable(t))
	ctx := context.Background()

	t.Run("paid", func(t *testing.T) {
		mustDeposit(t, e, 1, 10000)
		req := newOrder("saga-ok", 1, 3000)
		req.Mode = shop.ModeSaga
		o, err := e.Orders.CreateOrder(ctx, req)
		if err != nil {
			t.Fatalf("CreateOrder: %v", err)
		}
		if o.GetStatus() != shopv1.Order_PAID || o.GetMode() != shop.ModeSaga || o.GetPayableAmount() != 3000 || o.GetFailureReason() != "" {
			t.Fatalf("order = %v; want PAID saga, payable 3000", o)
		}
		if b, f := mustAccount(t, e, 1); b != 7000 || f != 0 {
			t.Errorf("account = %d/%d; want 7000/0", b, f)
		}
		if got := paymentStatus(t, e, "saga-ok"); got != shopv1.Payment_CAPTURED {
			t.Errorf("payment = %v; want CAPTURED", got)
		}
		again, err := e.Orders.CreateOrder(ctx, req)
		if err != nil || again.GetGid() != o.GetGid() || again.GetStatus() != shopv1.Order_PAID {
			t.Errorf("retried CreateOrder = %v, %v; want the same PAID order", again, err)
		}
		req.Mode = shop.ModeTCC
		_, err = e.Orders.CreateOrder(ctx, req)
		if code, r := reason(err); code != codes.AlreadyExists || r != "ORDER_CONFLICT" {
			t.Errorf("CreateOrder of the saga order as tcc = %v; want AlreadyExists ORDER_CONFLICT", err)
		}
	})

	t.Run("payment refused", func(t *testing.T) {
		mustDeposit(t, e, 2, 1000)
		req := newOrder("saga-poor", 2, 3000)
		req.Mode = shop.ModeSaga
		o, err := e.Orders.CreateOrder(ctx, req)
		if err != nil {
			t.Fatalf("CreateOrder: %v", err)
		}
		if o.GetStatus() != shopv1.Order_CANCELLED || o.GetFailureReason() != "INSUFFICIENT_BALANCE" || o.GetFailureMessage() == "" {
			t.Fatalf("order = %v; want CANCELLED with INSUFFICIENT_BALANCE and a message", o)
		}
		if b, f := mustAccount(t, e, 2); b != 1000 || f != 0 {
			t.Errorf("account = %d/%d; want 1000/0", b, f)
		}
	})

	t.Run("unknown mode", func(t *testing.T) {
		req := newOrder("saga-bad", 1, 3000)
		req.Mode = "xa"
		_, err := e.Orders.CreateOrder(ctx, req)
		if code, r := reason(err); code != codes.InvalidArgument || r != "INVALID_ARGUMENT" {
			t.Errorf("CreateOrder in mode xa = %v; want InvalidArgument", err)
		}
	})
}

// TestTwoSagasForOneOrder plays an order service that runs a second Saga
// for an order under a new gid, after the first one and at the same time as
// it: only one of them uses the coupon, and the coupon is USED exactly when
// the order is PAID, by the order's own transaction.
func TestTwoSagasForOneOrder(t *testing.T) {
	dtm := dtmtest.Start(t)
	coupons := mustCoupons(t)
	e := mustStart(t, dtm.GRPCAddr, coupons.Addr)
	ctx := context.Background()
	tpl := coupons.mustTemplate(t, nil)
	status := janitor.CoordinatorStatus(dtm.HTTPAddr, nil)

	// saga builds a Saga for the order by hand, as the shop builds it.
	saga := func(gid string, req *shopv1.CreateOrderRequest, discount int64) *dtmgrpc.SagaGrpc {
		payable := req.GetAmount() - discount
		s := dtmgrpc.NewSagaGrpc(dtm.GRPCAddr, gid, dtmgrpc.WithBranchHeaders(coupontest.BranchHeaders(t, gid, branchcred.Order{CouponCode: req.GetCouponCode(), OrderNo: req.GetOrderNo()})))
		s.WaitResult = true
		s.Add(coupons.Addr+couponv1.CouponService_UseCoupon_FullMethodName, coupons.Addr+couponv1.CouponService_UseCouponRevert_FullMethodName,
			&couponv1.CouponBranchRequest{UserId: req.GetUserId(), CouponCode: req.GetCouponCode(), Order: &couponv1.Order{
				OrderNo: req.GetOrderNo(), UserId: req.GetUserId(), Amount: req.GetAmount(), Currency: req.GetCurrency(), ProductLine: req.GetProductLine(),
				Items: []*couponv1.OrderItem{{Sku: "rice", ProductLine: "food", Quantity: 1, Amount: req.GetAmount()}},
			}})
		s.Add(e.Addr+shopv1.PaymentService_Debit_FullMethodName, e.Addr+shopv1.PaymentService_DebitRevert_FullMethodName,
			&shopv1.PaymentBranchRequest{OrderNo: req.GetOrderNo(), UserId: req.GetUserId(), Amount: payable})
		s.Add(e.Addr+shopv1.OrderService_OrderPay_FullMethodName, e.Addr+shopv1.OrderService_OrderPayRevert_FullMethodName,
			&shopv1.OrderBranchRequest{OrderNo: req.GetOrderNo(), DiscountAmount: discount, PayableAmount: payable})
		return s
	}
	// consistent checks what must hold whichever saga won.
	consistent := func(t *testing.T, userID int64, code, orderNo string, deposit int64) {
		t.Helper()
		o, err := e.Orders.GetOrder(ctx, &shopv1.GetOrderRequest{OrderNo: orderNo})
		if err != nil {
			t.Fatal(err)
		}
		c := coupons.coupon(t, userID, code)
		paid := o.GetStatus() == shopv1.Order_PAID
		if used := c.GetStatus() == couponv1.Coupon_USED; used != paid || used && c.GetGid() != o.GetGid() {
			t.Errorf("coupon %v (gid %s) with order %v (gid %s); want USED by the order's gid exactly when PAID", c.GetStatus(), c.GetGid(), o.GetStatus(), o.GetGid())
		}
		want := deposit
		if paid {
			want -= o.GetPayableAmount()
		}
		if b, f := mustAccount(t, e, userID); b != want || f != 0 {
			t.Errorf("account = %d/%d; want %d/0", b, f, want)
		}
		uses := 0
		for _, op := range coupons.ledger(t, code) {
			switch op {
			case "CONSUME":
				uses++
			case "RELEASE":
				uses--
			}
		}
		if uses != map[bool]int{true: 1, false: 0}[paid] {
			t.Errorf("ledger %v: %d uses standing; want one exactly when PAID", coupons.ledger(t, code), uses)
		}
	}

	t.Run("second saga after the first", func(t *testing.T) {
		mustDeposit(t, e, 1, 10000)
		req := newOrder("twice-1", 1, 6000)
		req.CouponCode, req.Mode = coupons.mustClaim(t, tpl, 1), shop.ModeSaga
		first, err := e.Orders.CreateOrder(ctx, req)
		if err != nil || first.GetStatus() != shopv1.Order_PAID || first.GetDiscountAmount() != 500 {
			t.Fatalf("CreateOrder = %v, %v; want PAID with discount 500", first, err)
		}
		err = saga(first.GetGid()+"-again", req, 500).Submit()
		if code, _ := reason(err); code != codes.Aborted {
			t.Fatalf("second saga = %v; want Aborted (FAILURE)", err)
		}
		if c := coupons.coupon(t, 1, req.GetCouponCode()); c.GetStatus() != couponv1.Coupon_USED || c.GetGid() != first.GetGid() {
			t.Errorf("coupon = %v by %s; want USED by %s", c.GetStatus(), c.GetGid(), first.GetGid())
		}
		if got := paymentStatus(t, e, req.GetOrderNo()); got != shopv1.Payment_CAPTURED {
			t.Errorf("payment = %v; want CAPTURED", got)
		}
		consistent(t, 1, req.GetCouponCode(), req.GetOrderNo(), 10000)
	})

	t.Run("two sagas at once", func(t *testing.T) {
		for round := range 3 {
			userID := int64(10 + round)
			orderNo := fmt.Sprintf("race-%d", round)
			mustDeposit(t, e, userID, 10000)
			req := newOrder(orderNo, userID, 6000)
			req.CouponCode = coupons.mustClaim(t, tpl, userID)
			gid := "race-gid-" + orderNo
			// The order row belongs to the first saga, as CreateOrder
			// would have written it.
			_, err := e.OrderDB.ExecContext(ctx, `INSERT INTO orders (order_no, user_id, amount, currency, items, coupon_code, mode, payable, gid, status)
				VALUES (?, ?, 6000, 'CNY', '[]', ?, 'saga', 6000, ?, 'PENDING')`, orderNo, userID, req.GetCouponCode(), gid)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			gids := []string{gid, gid + "-again"}
			for _, g := range gids {
				wg.Go(func() { _ = saga(g, req, 500).Submit() })
			}
			wg.Wait()
			for _, g := range gids {
				testenv.Eventually(t, 30*time.Second, "saga "+g+" finished", func() bool {
					st, err := status(ctx, g)
					return err == nil && (st == janitor.StatusSucceed || st == janitor.StatusFailed)
				})
			}
			consistent(t, userID, req.GetCouponCode(), orderNo, 10000)
		}
	})
}
