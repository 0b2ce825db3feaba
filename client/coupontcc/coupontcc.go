// Package coupontcc enlists a coupon in an order service's DTM TCC global
// transaction: one call registers the coupon service's Lock, Consume and
// Unlock as the branch's Try, Confirm and Cancel, runs the Try and returns the
// discount. It links only the DTM client, the coupon API and the service's
// dependency-free shape checks (participant/shape).
package coupontcc

import (
	"context"
	"fmt"

	"github.com/dtm-labs/client/dtmgrpc"

	"github.com/opencoupon/coupon/participant/shape"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Enlist adds the coupon req.CouponCode to the global transaction tcc and
// locks it for req.Order (the TCC Try). couponTarget is the coupon service's
// gRPC address as the DTM server reaches it, e.g. "127.0.0.1:9090": DTM calls
// ConsumeCoupon there when the transaction commits and UnlockCoupon when it
// rolls back, with the same request.
//
// With authentication on, the coupon service accepts the branch calls only
// with the credential of a caller holding the order role: set
// BranchHeaders on the transaction before it starts.
//
// The response carries the discount and the payable amount for the order.
// A coupon that cannot be used comes back as a gRPC Aborted error; Refusal
// tells its reason. The caller returns any error from its TCC function so DTM
// rolls the transaction back.
//
// A request the coupon service would refuse for its shape (no user, a
// malformed code, a missing or malformed order) is refused here, before the
// branch is registered, with an error wrapping *shape.FieldError: DTM never
// holds a branch whose payload names no coupon.
//
// ctx bounds the Try call. Like TccGrpc.CallBranch, Enlist must not be called
// concurrently on one tcc.
func Enlist(ctx context.Context, tcc *dtmgrpc.TccGrpc, couponTarget string, req *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	if err := Check(req); err != nil {
		return nil, fmt.Errorf("enlist coupon: %w", err)
	}
	// CallBranch runs the Try under tcc.Context, which the caller set up for
	// the whole transaction; ctx narrows it for this call only.
	saved := tcc.Context
	tcc.Context = ctx
	defer func() { tcc.Context = saved }()

	resp := new(couponv1.CouponBranchResponse)
	err := tcc.CallBranch(req,
		couponTarget+couponv1.CouponService_LockCoupon_FullMethodName,
		couponTarget+couponv1.CouponService_ConsumeCoupon_FullMethodName,
		couponTarget+couponv1.CouponService_UnlockCoupon_FullMethodName,
		resp)
	if err != nil {
		return nil, fmt.Errorf("lock coupon %s: %w", req.GetCouponCode(), err)
	}
	return resp, nil
}

// BranchHeaders are the DTM branch headers carrying the order service's
// bearer token for the coupon service. Set them on the global transaction
// before it starts, e.g.
//
//	dtmgrpc.TccGlobalTransaction2(dtm, gid, func(t *dtmgrpc.TccGrpc) {
//		t.BranchHeaders = coupontcc.BranchHeaders(token)
//	}, func(tcc *dtmgrpc.TccGrpc) error { ... coupontcc.Enlist(...) ... })
//
// DTM then sends them with every branch call of the transaction: the Try
// that Enlist makes from this process, and the Confirm or Cancel the DTM
// server makes later. They reach every participant of the transaction, not
// only the coupon service: give each order service a token of its own with
// only the order role.
func BranchHeaders(token string) map[string]string {
	return map[string]string{"authorization": "Bearer " + token}
}

// Check runs the coupon service's own shape checks on a branch request and
// returns the first *shape.FieldError found, or nil.
func Check(req *couponv1.CouponBranchRequest) error {
	if req.GetUserId() <= 0 {
		return &shape.FieldError{Field: "user_id", Message: "must be a positive id"}
	}
	if !shape.Code(req.GetCouponCode()) {
		return &shape.FieldError{Field: "coupon_code", Message: "is not a coupon code"}
	}
	if req.GetOrder() == nil {
		return &shape.FieldError{Field: "order", Message: "is required"}
	}
	o := req.GetOrder()
	order := shape.Order{OrderNo: o.GetOrderNo(), UserID: o.GetUserId(), Amount: o.GetAmount(), Currency: o.GetCurrency(), ProductLine: o.GetProductLine()}
	for _, it := range o.GetItems() {
		order.Items = append(order.Items, shape.Item{SKU: it.GetSku(), ProductLine: it.GetProductLine(), Quantity: it.GetQuantity(), Amount: it.GetAmount()})
	}
	if fe := shape.CheckOrder(req.GetUserId(), order); fe != nil {
		return fe
	}
	return nil
}

// Refusal reports whether err is a TCC Try refusing its branch (a gRPC
// Aborted status, which makes DTM roll back) and the google.rpc.ErrorInfo
// reason given, such as the coupon service's "COUPON_NOT_AVAILABLE" or
// "RULE_NOT_MET". err may be wrapped.
func Refusal(err error) (reason string, ok bool) {
	st, isStatus := status.FromError(err)
	if err == nil || !isStatus || st.Code() != codes.Aborted {
		return "", false
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo {
			return info.GetReason(), true
		}
	}
	return "", true
}
