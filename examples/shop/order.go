package shop

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/client/coupontcc"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/participant/shape"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// OrderConfig tells the order service where DTM and the branches are. The
// targets are gRPC addresses as the DTM server reaches them.
type OrderConfig struct {
	DTM    string // DTM gRPC server, e.g. "127.0.0.1:36790"
	Coupon string // coupon service, e.g. "127.0.0.1:9090"
	// Token is the shop's bearer token for the coupon service: its own
	// calls and the coupon's Try carry it. It never goes to DTM.
	Token string
	// Branch signs the branch credential DTM sends with the coupon's
	// Confirm, Cancel, Saga and refund branches (coupontcc.BranchHeaders),
	// good only for that transaction's coupon. Required with Token.
	Branch  coupontcc.Signer
	Payment string // payment service
	Self    string // this order service, for the order row's own branch
	// Timeout bounds the Try phase of one order, and again its Submit or
	// Abort. DTM rolls back a transaction still unsubmitted after 2×Timeout.
	Timeout time.Duration
}

// OrderServer is the order service over its own database (orders, barrier).
//
// CreateOrder writes the order PENDING, then runs one global transaction.
// In mode tcc: coupon Lock (if any), payment Freeze, then the order row's
// own Try, which marks it reserved. Confirm makes it PAID, consumes the
// coupon and captures the payment; Cancel makes it CANCELLED and releases
// both. An order that never reached its Try is cancelled by CreateOrder when
// the transaction fails, or by Sweep when the service stopped midway; either
// way its Try can no longer succeed, so the transaction cannot commit. Mode
// saga is described at placeSaga, refunds at RefundOrder.
type OrderServer struct {
	shopv1.UnimplementedOrderServiceServer
	db      *sql.DB
	cfg     OrderConfig
	log     *slog.Logger
	now     func() time.Time
	coupons *couponClient
}

var _ shopv1.OrderServiceServer = (*OrderServer)(nil)

// NewOrderServer returns an order service on the order database db.
func NewOrderServer(db *sql.DB, cfg OrderConfig, log *slog.Logger) *OrderServer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &OrderServer{db: db, cfg: cfg, log: log, now: time.Now, coupons: newCouponClient(cfg.Coupon, cfg.Token)}
}

// Close releases the connection to the coupon service.
func (s *OrderServer) Close() error { return s.coupons.close() }

// CreateOrder places an order. A refused coupon or payment, or a failed
// transaction, is no error: the order comes back CANCELLED with the reason.
func (s *OrderServer) CreateOrder(ctx context.Context, req *shopv1.CreateOrderRequest) (*shopv1.Order, error) {
	if err := validateCreate(req); err != nil {
		return nil, err
	}
	gid := "shop-" + req.GetOrderNo() + "-" + randomHex(4)
	mode := orderMode(req)
	prev, err := s.insert(ctx, req, gid)
	if err != nil {
		return nil, fmt.Errorf("create order %s: %w", req.GetOrderNo(), err)
	}
	if prev != nil {
		if prev.UserId != req.GetUserId() || prev.Amount != req.GetAmount() || prev.Currency != req.GetCurrency() ||
			prev.CouponCode != req.GetCouponCode() || prev.Mode != mode {
			return nil, errorf(codes.AlreadyExists, shopv1.ErrorReason_ORDER_CONFLICT, "order %s exists with other content", req.GetOrderNo())
		}
		return prev, nil
	}
	// Once the row exists the transaction runs to its end even if the
	// caller goes away, so the order is settled as soon as possible.
	ctx = context.WithoutCancel(ctx)
	if mode == ModeSaga {
		s.placeSaga(ctx, req, gid)
	} else {
		s.place(ctx, req, gid)
	}
	o, err := s.get(ctx, req.GetOrderNo())
	if err != nil {
		return nil, fmt.Errorf("create order %s: %w", req.GetOrderNo(), err)
	}
	return o, nil
}

// place runs the order's TCC global transaction and records its failure.
func (s *OrderServer) place(ctx context.Context, req *shopv1.CreateOrderRequest, gid string) {
	tryCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	finishCancel := context.CancelFunc(func() {})
	defer func() { finishCancel() }()
	tried := false
	headers, err := s.branchHeaders(gid, couponBranch(req))
	if err != nil {
		s.log.ErrorContext(ctx, "order transaction not started", "order_no", req.GetOrderNo(), "gid", gid, "err", err)
		if err := s.cancel(ctx, req.GetOrderNo(), shopv1.ErrorReason_TRANSACTION_FAILED.String(), err.Error()); err != nil {
			s.log.ErrorContext(ctx, "cancel order", "order_no", req.GetOrderNo(), "err", err)
		}
		return
	}
	err = dtmgrpc.TccGlobalTransaction2(s.cfg.DTM, gid, func(t *dtmgrpc.TccGrpc) {
		t.Context = tryCtx
		// Submit and Abort return once the Confirms or Cancels ran, so the
		// caller sees the order settled.
		t.WaitResult = true
		t.TimeoutToFail = max(1, int64(2*s.cfg.Timeout/time.Second))
		// Set before Prepare, so the DTM server has them for the Confirm
		// and Cancel calls too, not only for the Trys made from here.
		t.BranchHeaders = headers
	}, func(tcc *dtmgrpc.TccGrpc) error {
		defer func() {
			// Submit or Abort get their own deadline, even when the tries
			// used all of theirs.
			var finishCtx context.Context
			finishCtx, finishCancel = context.WithTimeout(ctx, s.cfg.Timeout)
			tcc.Context = finishCtx
		}()
		if err := s.try(tryCtx, tcc, req); err != nil {
			return err
		}
		tried = true
		return nil
	})
	log := s.log.With("order_no", req.GetOrderNo(), "gid", gid)
	switch {
	case err == nil:
		log.InfoContext(ctx, "order placed")
	case !tried:
		// No Submit was sent, so the transaction can only roll back.
		reason, msg, refusal := failureOf(err)
		if refusal {
			log.InfoContext(ctx, "order refused", "reason", reason, "err", err)
		} else {
			log.WarnContext(ctx, "order transaction failed", "err", err)
		}
		if err := s.cancel(ctx, req.GetOrderNo(), reason, msg); err != nil {
			log.ErrorContext(ctx, "cancel order", "err", err)
		}
	default:
		// Submit failed or a Confirm is still being retried: the outcome
		// is DTM's, and the order stays PENDING until its branch settles.
		log.WarnContext(ctx, "order outcome pending in DTM", "err", err)
	}
}

// try runs every branch's Try: the coupon, then the payment of what is left
// to pay, then the order row.
func (s *OrderServer) try(ctx context.Context, tcc *dtmgrpc.TccGrpc, req *shopv1.CreateOrderRequest) error {
	discount, payable := int64(0), req.GetAmount()
	if req.GetCouponCode() != "" {
		resp, err := coupontcc.Enlist(s.withToken(ctx), tcc, s.cfg.Coupon, couponBranch(req))
		if err != nil {
			return err
		}
		discount, payable = resp.GetDiscountAmount(), resp.GetPayableAmount()
		if err := checkDiscount(req, discount, payable); err != nil {
			return err
		}
	}
	pay := &shopv1.PaymentBranchRequest{OrderNo: req.GetOrderNo(), UserId: req.GetUserId(), Amount: payable}
	if err := tcc.CallBranch(pay,
		s.cfg.Payment+shopv1.PaymentService_FreezeTry_FullMethodName,
		s.cfg.Payment+shopv1.PaymentService_CaptureConfirm_FullMethodName,
		s.cfg.Payment+shopv1.PaymentService_UnfreezeCancel_FullMethodName,
		&emptypb.Empty{}); err != nil {
		return fmt.Errorf("freeze payment: %w", err)
	}
	ord := &shopv1.OrderBranchRequest{OrderNo: req.GetOrderNo(), DiscountAmount: discount, PayableAmount: payable}
	if err := tcc.CallBranch(ord,
		s.cfg.Self+shopv1.OrderService_OrderTry_FullMethodName,
		s.cfg.Self+shopv1.OrderService_OrderConfirm_FullMethodName,
		s.cfg.Self+shopv1.OrderService_OrderCancel_FullMethodName,
		&emptypb.Empty{}); err != nil {
		return fmt.Errorf("reserve order: %w", err)
	}
	return nil
}

// failureOf turns the error of a failed transaction into the order's
// failure reason: a branch's refusal reason, or TRANSACTION_FAILED.
func failureOf(err error) (reason, message string, refusal bool) {
	message = err.Error()
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		message = se.GRPCStatus().Message()
	}
	if len(message) > 512 {
		message = strings.ToValidUTF8(message[:512], "")
	}
	if r, ok := coupontcc.Refusal(err); ok && r != "" {
		return r, message, true
	}
	var fe *shape.FieldError
	if errors.As(err, &fe) {
		// Enlist refused the payload before registering the branch.
		return shopv1.ErrorReason_INVALID_ARGUMENT.String(), err.Error(), true
	}
	return shopv1.ErrorReason_TRANSACTION_FAILED.String(), message, false
}

// GetOrder returns an order.
func (s *OrderServer) GetOrder(ctx context.Context, req *shopv1.GetOrderRequest) (*shopv1.Order, error) {
	if !validOrderNo(req.GetOrderNo()) {
		return nil, invalid("order_no", "must be 1-64 letters, digits, '-' or '_'")
	}
	o, err := s.get(ctx, req.GetOrderNo())
	if err != nil {
		return nil, fmt.Errorf("get order %s: %w", req.GetOrderNo(), err)
	}
	return o, nil
}

// OrderTry reserves the PENDING order for its transaction, recording the
// discount and payable amount. It refuses an order that is no longer PENDING.
func (s *OrderServer) OrderTry(ctx context.Context, req *shopv1.OrderBranchRequest) (*emptypb.Empty, error) {
	if err := s.reserve(ctx, req, shopv1.Order_PENDING); err != nil {
		return nil, fmt.Errorf("try order %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// reserve is the order branch's action, a TCC Try or a Saga action: the
// PENDING order of the transaction records its discount and payable amount
// and becomes to (PENDING for a Try, PAID for a Saga).
func (s *OrderServer) reserve(ctx context.Context, req *shopv1.OrderBranchRequest, to shopv1.Order_Status) error {
	if !validOrderNo(req.GetOrderNo()) {
		return invalid("order_no", "must be 1-64 letters, digits, '-' or '_'")
	}
	return inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		o, err := lockPending(ctx, tx, gid, req)
		if err != nil {
			return err
		}
		now := s.now().UTC()
		_, err = tx.ExecContext(ctx, `UPDATE orders SET status = ?, discount = ?, payable = ?, tried_at = ?, updated_at = ? WHERE order_no = ?`,
			to.String(), req.GetDiscountAmount(), req.GetPayableAmount(), now, now, o.OrderNo)
		return err
	})
}

// lockPending locks the order of an order branch's action (TCC Try or Saga
// action) and refuses, Aborted, unless it is the PENDING order of this
// transaction and the branch's amounts add up to it.
func lockPending(ctx context.Context, tx *sql.Tx, gid string, req *shopv1.OrderBranchRequest) (*shopv1.Order, error) {
	o, err := lockOrder(ctx, tx, req.GetOrderNo())
	switch {
	case err != nil:
		return nil, err
	case o == nil:
		return nil, refused(shopv1.ErrorReason_NOT_FOUND, "no order %s", req.GetOrderNo())
	case o.Gid != gid:
		return nil, refused(shopv1.ErrorReason_ORDER_CONFLICT, "order %s belongs to transaction %s", o.OrderNo, o.Gid)
	case o.Status != shopv1.Order_PENDING:
		return nil, refused(shopv1.ErrorReason_ORDER_NOT_PENDING, "order %s is %s", o.OrderNo, o.Status)
	case req.GetDiscountAmount() < 0 || req.GetPayableAmount() < 0 || req.GetDiscountAmount()+req.GetPayableAmount() != o.Amount:
		return nil, refused(shopv1.ErrorReason_INVALID_ARGUMENT, "discount %d and payable %d do not make amount %d", req.GetDiscountAmount(), req.GetPayableAmount(), o.Amount)
	}
	return o, nil
}

// OrderConfirm makes the reserved order PAID.
func (s *OrderServer) OrderConfirm(ctx context.Context, req *shopv1.OrderBranchRequest) (*emptypb.Empty, error) {
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		o, err := lockOrder(ctx, tx, req.GetOrderNo())
		switch {
		case err != nil:
			return err
		case o == nil || o.Gid != gid:
			// DTM confirms only after the order's Try succeeded.
			return fmt.Errorf("no order reserved by transaction %s", gid)
		case o.Status == shopv1.Order_PAID:
			return nil
		case o.Status != shopv1.Order_PENDING:
			return fmt.Errorf("order is %s, cannot confirm", o.Status)
		}
		_, err = tx.ExecContext(ctx, `UPDATE orders SET status = 'PAID', updated_at = ? WHERE order_no = ?`, s.now().UTC(), o.OrderNo)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("confirm order %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// OrderCancel makes a PENDING order CANCELLED.
func (s *OrderServer) OrderCancel(ctx context.Context, req *shopv1.OrderBranchRequest) (*emptypb.Empty, error) {
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		_, err := tx.ExecContext(ctx, `UPDATE orders SET status = 'CANCELLED', updated_at = ?,
			failure_reason = IF(failure_reason = '', ?, failure_reason) WHERE order_no = ? AND gid = ? AND status = 'PENDING'`,
			s.now().UTC(), shopv1.ErrorReason_TRANSACTION_FAILED.String(), req.GetOrderNo(), gid)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cancel order %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// Sweep cancels, as ABANDONED, the orders created before createdBefore that
// are still PENDING and were never reserved by their Try: their order
// service stopped midway. Any age is safe, since a transaction still running
// then fails at the order's Try and rolls back; an age above the transaction
// timeout spares orders in flight. It returns how many it cancelled.
func (s *OrderServer) Sweep(ctx context.Context, createdBefore time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE orders SET status = 'CANCELLED', failure_reason = ?, failure_message = ?, updated_at = ?
		WHERE status = 'PENDING' AND tried_at IS NULL AND created_at < ? LIMIT 1000`,
		shopv1.ErrorReason_ABANDONED.String(), "the order service stopped before the order was reserved",
		s.now().UTC(), createdBefore.UTC())
	if err != nil {
		return 0, fmt.Errorf("sweep orders: %w", err)
	}
	return res.RowsAffected()
}

// cancel records the failure of an order whose transaction can only roll
// back. DTM's Cancel of the order branch may have come first.
func (s *OrderServer) cancel(ctx context.Context, orderNo, reason, message string) error {
	ctx, done := context.WithTimeout(ctx, s.cfg.Timeout)
	defer done()
	_, err := s.db.ExecContext(ctx, `UPDATE orders SET status = 'CANCELLED', failure_reason = ?, failure_message = ?, updated_at = ?
		WHERE order_no = ? AND status IN ('PENDING', 'CANCELLED')`, reason, message, s.now().UTC(), orderNo)
	if err != nil {
		return fmt.Errorf("cancel order %s: %w", orderNo, err)
	}
	return nil
}

type itemRow struct {
	SKU         string `json:"sku"`
	ProductLine string `json:"product_line,omitempty"`
	Quantity    int64  `json:"quantity"`
	Amount      int64  `json:"amount"`
}

// insert writes the order PENDING. When order_no exists it returns that
// order instead.
func (s *OrderServer) insert(ctx context.Context, req *shopv1.CreateOrderRequest, gid string) (*shopv1.Order, error) {
	items := make([]itemRow, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = itemRow{SKU: it.GetSku(), ProductLine: it.GetProductLine(), Quantity: it.GetQuantity(), Amount: it.GetAmount()}
	}
	itemsJSON, err := json.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("encode items: %w", err)
	}
	now := s.now().UTC()
	_, err = s.db.ExecContext(ctx, `INSERT INTO orders (order_no, user_id, amount, currency, product_line, items, coupon_code, mode, discount, payable, gid, status, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, 'PENDING', ?, ?)`,
		req.GetOrderNo(), req.GetUserId(), req.GetAmount(), req.GetCurrency(), req.GetProductLine(), itemsJSON,
		req.GetCouponCode(), orderMode(req), req.GetAmount(), gid, now, now)
	if isDuplicate(err) {
		return s.get(ctx, req.GetOrderNo())
	}
	if err != nil {
		return nil, fmt.Errorf("insert order: %w", err)
	}
	return nil, nil
}

const orderSelect = `SELECT order_no, user_id, amount, currency, coupon_code, mode, discount, payable, gid, status,
	failure_reason, failure_message, refund_gid, refunded_at, refund_reason, created_at, updated_at FROM orders`

func (s *OrderServer) get(ctx context.Context, orderNo string) (*shopv1.Order, error) {
	o, err := scanOrder(s.db.QueryRowContext(ctx, orderSelect+` WHERE order_no = ?`, orderNo))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(codes.NotFound, shopv1.ErrorReason_NOT_FOUND, "no order %s", orderNo)
	}
	return o, err
}

// lockOrder reads and locks an order; nil when there is none.
func lockOrder(ctx context.Context, tx *sql.Tx, orderNo string) (*shopv1.Order, error) {
	o, err := scanOrder(tx.QueryRowContext(ctx, orderSelect+` WHERE order_no = ? FOR UPDATE`, orderNo))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock order: %w", err)
	}
	return o, nil
}

func scanOrder(row *sql.Row) (*shopv1.Order, error) {
	var (
		o                shopv1.Order
		st               string
		refunded         sql.NullTime
		created, updated time.Time
	)
	err := row.Scan(&o.OrderNo, &o.UserId, &o.Amount, &o.Currency, &o.CouponCode, &o.Mode, &o.DiscountAmount, &o.PayableAmount,
		&o.Gid, &st, &o.FailureReason, &o.FailureMessage, &o.RefundGid, &refunded, &o.RefundReason, &created, &updated)
	if err != nil {
		return nil, err
	}
	o.Status = shopv1.Order_Status(shopv1.Order_Status_value[st])
	o.CreatedAt, o.UpdatedAt = timestamppb.New(created), timestamppb.New(updated)
	if refunded.Valid {
		o.RefundedAt = timestamppb.New(refunded.Time)
	}
	return &o, nil
}

var currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)

func validateCreate(req *shopv1.CreateOrderRequest) error {
	switch {
	case !validOrderNo(req.GetOrderNo()):
		return invalid("order_no", "must be 1-64 letters, digits, '-' or '_'")
	case req.GetUserId() <= 0:
		return invalid("user_id", "must be positive")
	case req.GetAmount() <= 0:
		return invalid("amount", "must be positive")
	case !currencyPattern.MatchString(req.GetCurrency()):
		return invalid("currency", "must be an ISO 4217 code such as CNY")
	case len(req.GetProductLine()) > 64:
		return invalid("product_line", "at most 64 bytes")
	case len(req.GetCouponCode()) > 64:
		return invalid("coupon_code", "at most 64 bytes")
	case len(req.GetItems()) > 100:
		return invalid("items", "at most 100")
	case req.GetMode() != "" && req.GetMode() != ModeTCC && req.GetMode() != ModeSaga:
		return invalid("mode", "must be %q (the default) or %q", ModeTCC, ModeSaga)
	}
	for i, it := range req.GetItems() {
		if it.GetSku() == "" || it.GetQuantity() <= 0 || it.GetAmount() < 0 {
			return invalid(fmt.Sprintf("items[%d]", i), "needs a sku, a positive quantity and an amount >= 0")
		}
	}
	return nil
}

// Modes of CreateOrder: the global transaction type an order runs as.
const (
	ModeTCC  = "tcc"
	ModeSaga = "saga"
)

func orderMode(req *shopv1.CreateOrderRequest) string {
	if req.GetMode() == "" {
		return ModeTCC
	}
	return req.GetMode()
}

// couponBranch is the coupon service's branch payload for the order.
func couponBranch(req *shopv1.CreateOrderRequest) *couponv1.CouponBranchRequest {
	items := make([]*couponv1.OrderItem, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = &couponv1.OrderItem{Sku: it.GetSku(), ProductLine: it.GetProductLine(), Quantity: it.GetQuantity(), Amount: it.GetAmount()}
	}
	return &couponv1.CouponBranchRequest{
		UserId:     req.GetUserId(),
		CouponCode: req.GetCouponCode(),
		Order: &couponv1.Order{
			OrderNo: req.GetOrderNo(), UserId: req.GetUserId(), Amount: req.GetAmount(),
			Currency: req.GetCurrency(), ProductLine: req.GetProductLine(), Items: items,
		},
	}
}

// checkDiscount refuses a coupon's answer whose amounts do not make the
// order's: the order would be paid short or twice.
func checkDiscount(req *shopv1.CreateOrderRequest, discount, payable int64) error {
	if discount < 0 || payable < 0 || discount+payable != req.GetAmount() {
		return fmt.Errorf("coupon %s: discount %d and payable %d do not make amount %d", req.GetCouponCode(), discount, payable, req.GetAmount())
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
