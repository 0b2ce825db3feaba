package shop

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// errNotPaid aborts a refund's message whose order, once locked, is no
// longer PAID: another refund of it committed first.
var errNotPaid = fmt.Errorf("order is no longer PAID: %w", dtmcli.ErrFailure)

// RefundOrder refunds a PAID order through a DTM 2-phase message (gid
// shop-refund-<order_no>-<random>). The message is prepared with its
// branches — the payment's Refund and, if the order used a coupon, the
// coupon service's ReturnCoupon — then the shop's local transaction marks
// the order REFUNDED behind the message's barrier, then the message is
// submitted and DTM runs the branches until they succeed. If the shop stops
// between its commit and the submit, DTM asks QueryPrepared, finds the
// commit and runs the branches all the same; if it stops before its commit,
// QueryPrepared rolls the message back and the order stays PAID.
//
// A refund is idempotent on the order: of two refunds, only the one whose
// local transaction finds the order PAID commits; the other's message is
// aborted, and either call answers the order as it stands.
func (s *OrderServer) RefundOrder(ctx context.Context, req *shopv1.RefundOrderRequest) (*shopv1.Order, error) {
	switch {
	case !validOrderNo(req.GetOrderNo()):
		return nil, invalid("order_no", "must be 1-64 letters, digits, '-' or '_'")
	case len(req.GetReason()) > 255 || !utf8.ValidString(req.GetReason()):
		return nil, invalid("reason", "at most 255 bytes of UTF-8")
	}
	o, err := s.get(ctx, req.GetOrderNo())
	if err != nil {
		return nil, fmt.Errorf("refund order %s: %w", req.GetOrderNo(), err)
	}
	switch o.Status {
	case shopv1.Order_REFUNDED:
		return o, nil
	case shopv1.Order_PAID:
	default:
		return nil, errorf(codes.FailedPrecondition, shopv1.ErrorReason_ORDER_NOT_REFUNDABLE, "order %s is %s; only a PAID order can be refunded", o.OrderNo, o.Status)
	}
	// Once the message is prepared the refund runs to its end even if the
	// caller goes away.
	ctx = context.WithoutCancel(ctx)
	gid := "shop-refund-" + o.OrderNo + "-" + randomHex(4)
	log := s.log.With("order_no", o.OrderNo, "gid", gid)
	err = s.refund(ctx, o, gid, req.GetReason())
	after, gerr := s.get(ctx, o.OrderNo)
	if gerr != nil {
		return nil, fmt.Errorf("refund order %s: %w", o.OrderNo, gerr)
	}
	switch {
	case after.Status == shopv1.Order_REFUNDED && err == nil:
		log.InfoContext(ctx, "order refunded")
	case after.Status == shopv1.Order_REFUNDED && after.RefundGid == gid:
		// Committed; DTM finishes the branches (after its back-check if
		// the submit was lost).
		log.WarnContext(ctx, "order refunded; the refund's branches are still running in DTM", "err", err)
	case after.Status == shopv1.Order_REFUNDED:
		log.InfoContext(ctx, "order refunded by another call", "refund_gid", after.RefundGid)
	default:
		log.WarnContext(ctx, "refund did not start", "err", err)
		return nil, errorf(codes.Unavailable, shopv1.ErrorReason_TRANSACTION_FAILED, "refund of order %s did not start; retry", o.OrderNo)
	}
	return after, nil
}

// refund runs the refund's 2-phase message for the PAID order o.
func (s *OrderServer) refund(ctx context.Context, o *shopv1.Order, gid, reason string) error {
	if reason == "" {
		reason = "order refunded"
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	headers, err := s.branchHeaders(gid, &couponv1.CouponBranchRequest{CouponCode: o.CouponCode, Order: &couponv1.Order{OrderNo: o.OrderNo}})
	if err != nil {
		return err
	}
	msg := dtmgrpc.NewMsgGrpc(s.cfg.DTM, gid, dtmgrpc.WithBranchHeaders(headers))
	msg.Context = ctx
	// Submit returns once the branches ran, so the caller sees the money
	// and the coupon back.
	msg.WaitResult = true
	// DTM back-checks a message still prepared this long after Prepare
	// (and never sooner): by then the local transaction has committed or
	// given up, since it runs under the same deadline.
	msg.TimeoutToFail = max(1, int64(s.cfg.Timeout/time.Second))
	msg.Add(s.cfg.Payment+shopv1.PaymentService_Refund_FullMethodName,
		&shopv1.PaymentBranchRequest{OrderNo: o.OrderNo, UserId: o.UserId, Amount: o.PayableAmount})
	if o.CouponCode != "" {
		msg.Add(s.cfg.Coupon+couponv1.CouponService_ReturnCoupon_FullMethodName, &couponv1.ReturnCouponRequest{
			RequestId: returnRequestID(o.OrderNo), UserId: o.UserId, CouponCode: o.CouponCode, OrderNo: o.OrderNo, Reason: reason,
		})
	}
	return msg.DoAndSubmit(s.cfg.Self+shopv1.OrderService_QueryPrepared_FullMethodName, func(bb *dtmcli.BranchBarrier) error {
		bb.DBType, bb.BarrierTableName = dtmcli.DBTypeMysql, barrierTable
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		return bb.Call(tx, func(tx *sql.Tx) error {
			cur, err := lockOrder(ctx, tx, o.OrderNo)
			if err != nil {
				return err
			}
			if cur == nil || cur.Status != shopv1.Order_PAID {
				return errNotPaid
			}
			now := s.now().UTC()
			_, err = tx.ExecContext(ctx, `UPDATE orders SET status = 'REFUNDED', refund_gid = ?, refunded_at = ?, refund_reason = ?, updated_at = ?
				WHERE order_no = ?`, gid, now, reason, now, o.OrderNo)
			return err
		})
	})
}

// returnRequestID is the idempotency key of the coupon's return for an
// order: refund-<order_no>, or a digest of the order number when that
// would pass the coupon service's 64 bytes.
func returnRequestID(orderNo string) string {
	if id := "refund-" + orderNo; len(id) <= 64 {
		return id
	}
	sum := sha256.Sum256([]byte(orderNo))
	return "refund-" + hex.EncodeToString(sum[:])[:57]
}

// QueryPrepared is DTM's back-check of a refund's 2-phase message. It
// answers OK when the refund's local transaction committed. Otherwise it
// first writes the rollback barrier row, so that a local transaction still
// on its way can no longer commit, and answers Aborted (DTM's FAILURE).
//
// It is dtmcli.BranchBarrier.QueryPrepared, on the shop's own barrier table
// and with the call's context: the client library's reads its table name
// from a process-wide setting.
func (s *OrderServer) QueryPrepared(ctx context.Context, _ *emptypb.Empty) (*emptypb.Empty, error) {
	bb, err := dtmgrpc.BarrierFromGrpc(ctx)
	if err != nil {
		return nil, errorf(codes.InvalidArgument, shopv1.ErrorReason_MISSING_BARRIER, "back-check called without DTM transaction metadata: %v", err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT IGNORE INTO `+barrierTable+` (trans_type, gid, branch_id, op, barrier_id, reason) VALUES (?, ?, ?, ?, ?, ?)`,
		bb.TransType, bb.Gid, dtmimp.MsgDoBranch0, dtmimp.MsgDoOp, dtmimp.MsgDoBarrier1, dtmimp.OpRollback)
	if err != nil {
		return nil, fmt.Errorf("back-check %s: %w", bb.Gid, err)
	}
	var reason string
	err = s.db.QueryRowContext(ctx, `SELECT reason FROM `+barrierTable+` WHERE gid = ? AND branch_id = ? AND op = ? AND barrier_id = ?`,
		bb.Gid, dtmimp.MsgDoBranch0, dtmimp.MsgDoOp, dtmimp.MsgDoBarrier1).Scan(&reason)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("back-check %s: barrier row vanished", bb.Gid)
	}
	if err != nil {
		return nil, fmt.Errorf("back-check %s: %w", bb.Gid, err)
	}
	if reason == dtmimp.OpRollback {
		return nil, errorf(codes.Aborted, shopv1.ErrorReason_TRANSACTION_FAILED, "refund %s did not commit and is rolled back", bb.Gid)
	}
	return &emptypb.Empty{}, nil
}
