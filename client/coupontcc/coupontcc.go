// Package coupontcc enlists a coupon in an order service's DTM TCC global
// transaction: one call registers the coupon service's Lock, Consume and
// Unlock as the branch's Try, Confirm and Cancel, runs the Try and returns the
// discount. It links only the DTM client, the coupon API and the service's
// dependency-free shape checks (participant/shape).
package coupontcc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/participant/shape"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Enlist adds the coupon req.CouponCode to the global transaction tcc and
// locks it for req.Order (the TCC Try). couponTarget is the coupon service's
// gRPC address as the DTM server reaches it, e.g. "127.0.0.1:9090": DTM calls
// ConsumeCoupon there when the transaction commits and UnlockCoupon when it
// rolls back, with the same request.
//
// With authentication on, the coupon service accepts the Try only with the
// token of a caller holding the order role (ctx from WithToken), and DTM's
// Confirm and Cancel only with that caller's branch credential: set
// BranchHeaders on the transaction before it starts.
//
// The response carries the discount and the payable amount for the order.
// A coupon that cannot be used comes back as a gRPC Aborted error; Refusal
// tells its reason. The caller returns any error from its TCC function so DTM
// rolls the transaction back.
//
// A request its branch headers' credential does not cover is refused here
// too, with ErrNotCovered, before the branch is registered.
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
	if err := covered(tcc, req); err != nil {
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

// ErrNotCovered is returned by Enlist, before the branch is registered, when
// the transaction's branch credential does not name the request's gid,
// coupon and order: the coupon service would refuse DTM's Confirm and Cancel
// of the branch, and DTM would retry them without end.
var ErrNotCovered = errors.New("the branch headers' credential does not cover this coupon")

// covered checks the branch credential in tcc's branch headers, if any,
// against req.
func covered(tcc *dtmgrpc.TccGrpc, req *couponv1.CouponBranchRequest) error {
	v, ok := tcc.BranchHeaders[branchcred.Header]
	if !ok {
		return nil
	}
	c, err := branchcred.Peek(v)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotCovered, err)
	}
	if c.GID != tcc.Gid || !c.Covers(req.GetCouponCode(), req.GetOrder().GetOrderNo()) {
		return fmt.Errorf("%w: it names gid %s and %v, not coupon %s of order %s in %s", ErrNotCovered, c.GID, c.Orders, req.GetCouponCode(), req.GetOrder().GetOrderNo(), tcc.Gid)
	}
	return nil
}

// Signer signs the branch credentials of one order service (see package
// branchcred).
type Signer struct {
	// Caller is the order service's identity in the coupon service's
	// auth.callers, the one its Key is configured under.
	Caller string
	// Key signs; configure the same id and secret in the coupon service's
	// auth.callers[].branch_keys.
	Key branchcred.Key
	// TTL defaults to branchcred.DefaultTTL.
	TTL time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// BranchHeaders are the DTM branch headers for the global transaction gid
// using the coupons in orders (coupon code and order number, as in the
// branch requests). Set them on the transaction before it starts, e.g.
//
//	h, err := coupontcc.BranchHeaders(signer, gid, coupontcc.OrderOf(req))
//	dtmgrpc.TccGlobalTransaction2(dtm, gid, func(t *dtmgrpc.TccGrpc) {
//		t.BranchHeaders = h
//	}, func(tcc *dtmgrpc.TccGrpc) error {
//		... coupontcc.Enlist(coupontcc.WithToken(ctx, token), tcc, ...) ...
//	})
//
// DTM stores them with the transaction, shows them on its HTTP API and
// sends them with every branch call. They carry a branch credential, not a
// token: the coupon service accepts it only on the calls DTM makes (Consume,
// Unlock, Use, UseRevert, Return), only with this gid in DTM's dtm-gid
// metadata, only for these coupons and orders, and only until it expires.
// Never put a bearer token in branch headers: anyone who reads the
// coordinator could reuse it.
func BranchHeaders(s Signer, gid string, orders ...branchcred.Order) (map[string]string, error) {
	now, ttl := time.Now, s.TTL
	if s.Now != nil {
		now = s.Now
	}
	if ttl <= 0 {
		ttl = branchcred.DefaultTTL
	}
	cred, err := branchcred.Sign(s.Key, s.Caller, gid, now().Add(ttl), orders...)
	if err != nil {
		return nil, fmt.Errorf("branch headers of %s: %w", gid, err)
	}
	return map[string]string{branchcred.Header: cred}, nil
}

// OrderOf is the coupon and order a branch request names, for BranchHeaders.
func OrderOf(req *couponv1.CouponBranchRequest) branchcred.Order {
	return branchcred.Order{CouponCode: req.GetCouponCode(), OrderNo: req.GetOrder().GetOrderNo()}
}

// WithToken makes the calls under ctx carry the order service's own bearer
// token. Enlist's Try is the order service's call, not DTM's: it needs the
// token, which thus never reaches the coordinator.
func WithToken(ctx context.Context, token string) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set("authorization", "Bearer "+token)
	return metadata.NewOutgoingContext(ctx, md)
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
