package shop_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/opencoupon/coupon/examples/shop"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/dtmtest"
)

func newOrder(orderNo string, userID, amount int64) *shopv1.CreateOrderRequest {
	return &shopv1.CreateOrderRequest{
		OrderNo: orderNo, UserId: userID, Amount: amount, Currency: "CNY", ProductLine: "food",
		Items: []*shopv1.OrderItem{{Sku: "rice", ProductLine: "food", Quantity: 1, Amount: amount}},
	}
}

func TestCreateOrderWithoutCoupon(t *testing.T) {
	dtm := dtmtest.Start(t)
	e := mustStart(t, dtm.GRPCAddr, unreachable(t))
	ctx := context.Background()

	t.Run("paid", func(t *testing.T) {
		mustDeposit(t, e, 1, 10000)
		req := newOrder("ok-1", 1, 3000)
		o, err := e.Orders.CreateOrder(ctx, req)
		if err != nil {
			t.Fatalf("CreateOrder: %v", err)
		}
		if o.GetStatus() != shopv1.Order_PAID || o.GetDiscountAmount() != 0 || o.GetPayableAmount() != 3000 || o.GetGid() == "" || o.GetFailureReason() != "" {
			t.Fatalf("order = %v; want PAID, discount 0, payable 3000, a gid, no failure", o)
		}
		if b, f := mustAccount(t, e, 1); b != 7000 || f != 0 {
			t.Errorf("account = %d/%d; want 7000/0", b, f)
		}
		if got := paymentStatus(t, e, "ok-1"); got != shopv1.Payment_CAPTURED {
			t.Errorf("payment = %v; want CAPTURED", got)
		}

		again, err := e.Orders.CreateOrder(ctx, req)
		if err != nil || again.GetGid() != o.GetGid() || again.GetStatus() != shopv1.Order_PAID {
			t.Errorf("retried CreateOrder = %v, %v; want the same PAID order", again, err)
		}
		if b, _ := mustAccount(t, e, 1); b != 7000 {
			t.Errorf("balance after retry = %d; want 7000", b)
		}
		_, err = e.Orders.CreateOrder(ctx, newOrder("ok-1", 1, 3001))
		if code, r := reason(err); code != codes.AlreadyExists || r != "ORDER_CONFLICT" {
			t.Errorf("CreateOrder with the same order_no and another amount = %v; want AlreadyExists ORDER_CONFLICT", err)
		}
		got, err := e.Orders.GetOrder(ctx, &shopv1.GetOrderRequest{OrderNo: "ok-1"})
		if err != nil || got.GetStatus() != shopv1.Order_PAID {
			t.Errorf("GetOrder = %v, %v; want PAID", got, err)
		}
	})

	t.Run("insufficient balance", func(t *testing.T) {
		mustDeposit(t, e, 2, 1000)
		o, err := e.Orders.CreateOrder(ctx, newOrder("poor-1", 2, 3000))
		if err != nil {
			t.Fatalf("CreateOrder: %v", err)
		}
		if o.GetStatus() != shopv1.Order_CANCELLED || o.GetFailureReason() != "INSUFFICIENT_BALANCE" {
			t.Fatalf("order = %v; want CANCELLED with INSUFFICIENT_BALANCE", o)
		}
		if b, f := mustAccount(t, e, 2); b != 1000 || f != 0 {
			t.Errorf("account = %d/%d; want 1000/0", b, f)
		}
		if got := paymentStatus(t, e, "poor-1"); got != shopv1.Payment_STATUS_UNSPECIFIED {
			t.Errorf("payment = %v; want none", got)
		}
	})

	// In either mode: a coupon service that cannot be reached cancels the
	// order, and a malformed coupon code is refused before any branch.
	for i, mode := range []string{shop.ModeTCC, shop.ModeSaga} {
		for j, c := range []struct{ code, reason string }{{"0APY000000000000", "TRANSACTION_FAILED"}, {"C0FFEE", "INVALID_ARGUMENT"}} {
			t.Run(mode+" coupon "+c.code, func(t *testing.T) {
				userID := int64(3 + 2*i + j)
				mustDeposit(t, e, userID, 10000)
				req := newOrder(fmt.Sprintf("nocoupon-%s-%d", mode, j), userID, 3000)
				req.CouponCode, req.Mode = c.code, mode
				o, err := e.Orders.CreateOrder(ctx, req)
				if err != nil {
					t.Fatalf("CreateOrder: %v", err)
				}
				if o.GetStatus() != shopv1.Order_CANCELLED || o.GetFailureReason() != c.reason {
					t.Fatalf("order = %v; want CANCELLED with %s", o, c.reason)
				}
				if b, f := mustAccount(t, e, userID); b != 10000 || f != 0 {
					t.Errorf("account = %d/%d; want 10000/0", b, f)
				}
			})
		}
	}
}

// TestCreateOrderCoordinatorUnreachable: in either mode, an order whose
// transaction cannot start is cancelled and nothing is taken.
func TestCreateOrderCoordinatorUnreachable(t *testing.T) {
	e := mustStart(t, unreachable(t), unreachable(t))
	for i, mode := range []string{shop.ModeTCC, shop.ModeSaga} {
		t.Run(mode, func(t *testing.T) {
			userID := int64(1 + i)
			mustDeposit(t, e, userID, 10000)
			req := newOrder("nodtm-"+mode, userID, 3000)
			req.Mode = mode
			o, err := e.Orders.CreateOrder(context.Background(), req)
			if err != nil {
				t.Fatalf("CreateOrder: %v", err)
			}
			if o.GetStatus() != shopv1.Order_CANCELLED || o.GetFailureReason() != "TRANSACTION_FAILED" {
				t.Fatalf("order = %v; want CANCELLED with TRANSACTION_FAILED", o)
			}
			if b, f := mustAccount(t, e, userID); b != 10000 || f != 0 {
				t.Errorf("account = %d/%d; want 10000/0", b, f)
			}
		})
	}
}

func TestCreateOrderInvalid(t *testing.T) {
	e := mustStart(t, unreachable(t), unreachable(t))
	tests := []struct {
		name   string
		modify func(*shopv1.CreateOrderRequest)
	}{
		{"no order_no", func(r *shopv1.CreateOrderRequest) { r.OrderNo = "" }},
		{"order_no with a space", func(r *shopv1.CreateOrderRequest) { r.OrderNo = "a b" }},
		{"no user", func(r *shopv1.CreateOrderRequest) { r.UserId = 0 }},
		{"zero amount", func(r *shopv1.CreateOrderRequest) { r.Amount = 0 }},
		{"bad currency", func(r *shopv1.CreateOrderRequest) { r.Currency = "yuan" }},
		{"item without sku", func(r *shopv1.CreateOrderRequest) { r.Items[0].Sku = "" }},
		{"item without quantity", func(r *shopv1.CreateOrderRequest) { r.Items[0].Quantity = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newOrder("bad-1", 1, 100)
			tt.modify(req)
			_, err := e.Orders.CreateOrder(context.Background(), req)
			if code, r := reason(err); code != codes.InvalidArgument || r != "INVALID_ARGUMENT" {
				t.Errorf("CreateOrder = %v; want InvalidArgument INVALID_ARGUMENT", err)
			}
		})
	}
	_, err := e.Orders.GetOrder(context.Background(), &shopv1.GetOrderRequest{OrderNo: "missing"})
	if code, r := reason(err); code != codes.NotFound || r != "NOT_FOUND" {
		t.Errorf("GetOrder(missing) = %v; want NotFound", err)
	}
}

// TestSweep covers an order service that stopped between writing the order
// and its Try: the sweeper cancels the order, and a late Try is refused so
// the transaction rolls back.
func TestSweep(t *testing.T) {
	e := mustStart(t, unreachable(t), unreachable(t))
	ctx := context.Background()
	old := time.Now().UTC().Add(-time.Hour)
	for _, r := range []struct {
		orderNo string
		tried   any
	}{{"abandoned", nil}, {"reserved", old}} {
		_, err := e.OrderDB.ExecContext(ctx, `INSERT INTO orders (order_no, user_id, amount, currency, items, payable, gid, status, tried_at, created_at, updated_at)
			VALUES (?, 1, 100, 'CNY', '[]', 100, ?, 'PENDING', ?, ?, ?)`, r.orderNo, "gid-"+r.orderNo, r.tried, old, old)
		if err != nil {
			t.Fatal(err)
		}
	}
	n, err := e.Server.Sweep(ctx, time.Now().Add(-time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	for orderNo, want := range map[string]shopv1.Order_Status{"abandoned": shopv1.Order_CANCELLED, "reserved": shopv1.Order_PENDING} {
		o, err := e.Orders.GetOrder(ctx, &shopv1.GetOrderRequest{OrderNo: orderNo})
		if err != nil || o.GetStatus() != want {
			t.Errorf("GetOrder(%s) = %v, %v; want %v", orderNo, o, err, want)
		}
	}
	_, err = e.Orders.OrderTry(branchCtx(ctx, "gid-abandoned", "try"), &shopv1.OrderBranchRequest{OrderNo: "abandoned", PayableAmount: 100})
	if code, r := reason(err); code != codes.Aborted || r != "ORDER_NOT_PENDING" {
		t.Errorf("late OrderTry = %v; want Aborted ORDER_NOT_PENDING", err)
	}
}

// TestOrderBranches checks the order row's branch under DTM's retries.
func TestOrderBranches(t *testing.T) {
	e := mustStart(t, unreachable(t), unreachable(t))
	ctx := context.Background()
	insert := func(orderNo string) {
		t.Helper()
		_, err := e.OrderDB.ExecContext(ctx, `INSERT INTO orders (order_no, user_id, amount, currency, items, payable, gid, status)
			VALUES (?, 1, 100, 'CNY', '[]', 100, ?, 'PENDING')`, orderNo, "gid-"+orderNo)
		if err != nil {
			t.Fatal(err)
		}
	}
	type branch func(context.Context, *shopv1.OrderBranchRequest, ...grpc.CallOption) (*emptypb.Empty, error)
	branches := map[string]struct {
		call             branch
		transType, dtmOp string
	}{
		"try":     {e.Orders.OrderTry, "tcc", "try"},
		"confirm": {e.Orders.OrderConfirm, "tcc", "confirm"},
		"cancel":  {e.Orders.OrderCancel, "tcc", "cancel"},
		"pay":     {e.Orders.OrderPay, "saga", "action"},
		"revert":  {e.Orders.OrderPayRevert, "saga", "compensate"},
	}
	call := func(orderNo, op string, discount int64) error {
		req := &shopv1.OrderBranchRequest{OrderNo: orderNo, DiscountAmount: discount, PayableAmount: 100 - discount}
		b := branches[op]
		_, err := b.call(barrierCtx(ctx, b.transType, "gid-"+orderNo, "01", b.dtmOp), req)
		return err
	}
	tests := []struct {
		name     string
		ops      []string
		want     shopv1.Order_Status
		discount int64
	}{
		{"try confirm confirm", []string{"try", "try", "confirm", "confirm"}, shopv1.Order_PAID, 30},
		{"try cancel cancel", []string{"try", "cancel", "cancel"}, shopv1.Order_CANCELLED, 30},
		{"cancel then hanging try", []string{"cancel", "try"}, shopv1.Order_PENDING, 0},
		{"saga pay pay", []string{"pay", "pay"}, shopv1.Order_PAID, 30},
		{"saga pay revert revert", []string{"pay", "revert", "revert"}, shopv1.Order_CANCELLED, 30},
		{"saga revert then hanging pay", []string{"revert", "pay"}, shopv1.Order_PENDING, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orderNo := fmt.Sprintf("b-%d", i)
			insert(orderNo)
			for _, op := range tt.ops {
				if err := call(orderNo, op, 30); err != nil {
					t.Fatalf("%s: %v", op, err)
				}
			}
			o, err := e.Orders.GetOrder(ctx, &shopv1.GetOrderRequest{OrderNo: orderNo})
			if err != nil || o.GetStatus() != tt.want || o.GetDiscountAmount() != tt.discount {
				t.Errorf("order = %v, %v; want %v with discount %d", o, err, tt.want, tt.discount)
			}
		})
	}

	insert("b-paid-twice")
	if err := call("b-paid-twice", "pay", 0); err != nil {
		t.Fatal(err)
	}
	// Another saga's action for the paid order is refused.
	_, err := e.Orders.OrderPay(barrierCtx(ctx, "saga", "gid-b-paid-twice", "02", "action"), &shopv1.OrderBranchRequest{OrderNo: "b-paid-twice", PayableAmount: 100})
	if code, r := reason(err); code != codes.Aborted || r != "ORDER_NOT_PENDING" {
		t.Errorf("OrderPay of a PAID order = %v; want Aborted ORDER_NOT_PENDING", err)
	}

	insert("b-bad-sum")
	_, err = e.Orders.OrderTry(branchCtx(ctx, "gid-b-bad-sum", "try"), &shopv1.OrderBranchRequest{OrderNo: "b-bad-sum", DiscountAmount: 10, PayableAmount: 10})
	if code, r := reason(err); code != codes.Aborted || r != "INVALID_ARGUMENT" {
		t.Errorf("OrderTry with amounts not adding up = %v; want Aborted INVALID_ARGUMENT", err)
	}
}
