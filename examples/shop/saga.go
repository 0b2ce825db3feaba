package shop

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/opencoupon/coupon/client/coupontcc"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// placeSaga runs the order as one DTM Saga: the coupon's UseCoupon (if any),
// the payment's Debit of what is left to pay, then the order row's OrderPay,
// which makes it PAID; each with its compensation (UseCouponRevert,
// DebitRevert, OrderPayRevert). A Saga registers every branch's payload
// before it runs, so the discount is quoted first (ListApplicableCoupons):
// an approved template's money rules never change, so UseCoupon takes the
// quoted discount. A coupon missing from the quote cancels the order with
// the reason, and no Saga starts.
//
// Whatever goes wrong after Submit, the order can be cancelled at once: its
// own action comes last and refuses an order that is not PENDING, so a Saga
// still running then fails there and DTM compensates the coupon and the
// payment. CreateOrder therefore answers PAID or CANCELLED.
func (s *OrderServer) placeSaga(ctx context.Context, req *shopv1.CreateOrderRequest, gid string) {
	log := s.log.With("order_no", req.GetOrderNo(), "gid", gid, "mode", ModeSaga)
	fail := func(reason, message string) {
		if err := s.cancel(ctx, req.GetOrderNo(), reason, message); err != nil {
			log.ErrorContext(ctx, "cancel order", "err", err)
		}
	}
	qctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()

	var coupon *couponv1.CouponBranchRequest
	discount, payable := int64(0), req.GetAmount()
	if req.GetCouponCode() != "" {
		coupon = couponBranch(req)
		if err := coupontcc.Check(coupon); err != nil {
			fail(shopv1.ErrorReason_INVALID_ARGUMENT.String(), err.Error())
			return
		}
		q, err := s.quote(qctx, coupon)
		if err != nil {
			log.WarnContext(ctx, "quote coupon", "err", err)
			fail(shopv1.ErrorReason_TRANSACTION_FAILED.String(), err.Error())
			return
		}
		if q == nil {
			reason, msg, err := s.couponRefusal(qctx, coupon, false)
			if err != nil {
				log.WarnContext(ctx, "read refused coupon", "err", err)
				reason, msg = shopv1.ErrorReason_TRANSACTION_FAILED.String(), err.Error()
			}
			log.InfoContext(ctx, "order refused", "reason", reason)
			fail(reason, msg)
			return
		}
		discount, payable = q.GetDiscountAmount(), q.GetPayableAmount()
		if err := checkDiscount(req, discount, payable); err != nil {
			log.ErrorContext(ctx, "quote does not add up", "err", err)
			fail(shopv1.ErrorReason_TRANSACTION_FAILED.String(), err.Error())
			return
		}
	}

	headers, err := s.branchHeaders(gid, coupon)
	if err != nil {
		log.ErrorContext(ctx, "saga not started", "err", err)
		fail(shopv1.ErrorReason_TRANSACTION_FAILED.String(), err.Error())
		return
	}
	saga := dtmgrpc.NewSagaGrpc(s.cfg.DTM, gid, dtmgrpc.WithBranchHeaders(headers))
	saga.Context = qctx
	// Submit returns once the branches (or their compensations) ran.
	saga.WaitResult = true
	saga.TimeoutToFail = max(1, int64(2*s.cfg.Timeout/time.Second))
	if coupon != nil {
		saga.Add(s.cfg.Coupon+couponv1.CouponService_UseCoupon_FullMethodName,
			s.cfg.Coupon+couponv1.CouponService_UseCouponRevert_FullMethodName, coupon)
	}
	saga.Add(s.cfg.Payment+shopv1.PaymentService_Debit_FullMethodName,
		s.cfg.Payment+shopv1.PaymentService_DebitRevert_FullMethodName,
		&shopv1.PaymentBranchRequest{OrderNo: req.GetOrderNo(), UserId: req.GetUserId(), Amount: payable})
	saga.Add(s.cfg.Self+shopv1.OrderService_OrderPay_FullMethodName,
		s.cfg.Self+shopv1.OrderService_OrderPayRevert_FullMethodName,
		&shopv1.OrderBranchRequest{OrderNo: req.GetOrderNo(), DiscountAmount: discount, PayableAmount: payable})
	err = saga.Submit()
	if err == nil {
		log.InfoContext(ctx, "order placed")
		return
	}
	branch, reason, msg, refusal := sagaFailure(err)
	if refusal && reason == "" {
		// Not one of the shop's own branches; its message stays the
		// order's failure message.
		reason = shopv1.ErrorReason_TRANSACTION_FAILED.String()
		if coupon != nil && strings.HasSuffix(branch, couponv1.CouponService_UseCoupon_FullMethodName) {
			if r, _, rerr := s.couponRefusal(qctx, coupon, true); rerr == nil {
				reason = r
			} else {
				log.WarnContext(ctx, "read refused coupon", "err", rerr)
			}
		}
	}
	if refusal {
		log.InfoContext(ctx, "order refused", "reason", reason, "err", err)
	} else {
		log.WarnContext(ctx, "order saga did not succeed; cancelling the order, which makes a saga still running fail", "err", err)
	}
	fail(reason, msg)
}

// sagaFailure reads the error of a Saga's Submit. A branch's refusal comes
// back Aborted, as DTM's rollback reason "url:URL return failed: MESSAGE":
// the refusing branch and its message. A shop branch's message names its
// reason (refusalIn); for any other branch reason is empty, for the caller
// to name. Anything else (a timeout, an unknown outcome, an error reaching
// DTM) is TRANSACTION_FAILED and no refusal.
func sagaFailure(err error) (branch, reason, message string, refusal bool) {
	st := status.Convert(err)
	message = sagaMessage(st.Message())
	failed := shopv1.ErrorReason_TRANSACTION_FAILED.String()
	if st.Code() != codes.Aborted {
		return "", failed, message, false
	}
	rest, ok := strings.CutPrefix(message, "url:")
	if !ok {
		return "", failed, message, false
	}
	branch, message, ok = strings.Cut(rest, " return failed: ")
	if !ok {
		return "", failed, sagaMessage(st.Message()), false
	}
	if r, detail, ok := refusalIn(message); ok {
		return branch, r.String(), detail, true
	}
	return branch, "", message, true
}

// sagaMessage trims DTM's " FAILURE" suffix and bounds the message to the
// column.
func sagaMessage(m string) string {
	m = strings.TrimSuffix(m, " FAILURE")
	if len(m) > 512 {
		m = strings.ToValidUTF8(m[:512], "")
	}
	return m
}

// OrderPay is the order row's Saga action: the PENDING order of this
// transaction becomes PAID with its discount and payable amount. It refuses
// (Aborted) an order that is no longer PENDING, e.g. one the shop cancelled
// because its Saga went wrong.
func (s *OrderServer) OrderPay(ctx context.Context, req *shopv1.OrderBranchRequest) (*emptypb.Empty, error) {
	if err := s.reserve(ctx, req, shopv1.Order_PAID); err != nil {
		return nil, fmt.Errorf("pay order %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// OrderPayRevert is the order row's Saga compensation: the order of this
// transaction becomes CANCELLED, from PENDING, or from PAID when DTM rolls
// the Saga back after its action (a timeout). It never refuses.
func (s *OrderServer) OrderPayRevert(ctx context.Context, req *shopv1.OrderBranchRequest) (*emptypb.Empty, error) {
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		_, err := tx.ExecContext(ctx, `UPDATE orders SET status = 'CANCELLED', updated_at = ?,
			failure_reason = IF(failure_reason = '', ?, failure_reason) WHERE order_no = ? AND gid = ? AND status IN ('PENDING', 'PAID')`,
			s.now().UTC(), shopv1.ErrorReason_TRANSACTION_FAILED.String(), req.GetOrderNo(), gid)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revert order %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}
