package shop

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
)

// PaymentServer is the payment service over its own database (accounts,
// payments, barrier). Its TCC branches move an order's payable amount from
// balance to frozen (Try), out of frozen (Confirm) or back (Cancel); its
// Saga branches take it at once (Debit) or give it back (DebitRevert); a
// refund gives a captured payment back (Refund).
type PaymentServer struct {
	shopv1.UnimplementedPaymentServiceServer
	db  *sql.DB
	now func() time.Time
}

var _ shopv1.PaymentServiceServer = (*PaymentServer)(nil)

// NewPaymentServer returns a payment service on the payment database db.
func NewPaymentServer(db *sql.DB) *PaymentServer {
	return &PaymentServer{db: db, now: time.Now}
}

// Deposit adds to a user's balance, opening the account on first use.
func (s *PaymentServer) Deposit(ctx context.Context, req *shopv1.DepositRequest) (*shopv1.Account, error) {
	if req.GetUserId() <= 0 {
		return nil, invalid("user_id", "must be positive")
	}
	if req.GetAmount() <= 0 {
		return nil, invalid("amount", "must be positive")
	}
	now := s.now().UTC()
	_, err := s.db.ExecContext(ctx, `INSERT INTO accounts (user_id, balance, frozen, created_at, updated_at) VALUES (?, ?, 0, ?, ?)
		ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance), updated_at = VALUES(updated_at)`,
		req.GetUserId(), req.GetAmount(), now, now)
	if err != nil {
		return nil, fmt.Errorf("deposit to user %d: %w", req.GetUserId(), err)
	}
	return s.GetAccount(ctx, &shopv1.GetAccountRequest{UserId: req.GetUserId()})
}

// GetAccount returns a user's balance and frozen amount.
func (s *PaymentServer) GetAccount(ctx context.Context, req *shopv1.GetAccountRequest) (*shopv1.Account, error) {
	a := &shopv1.Account{UserId: req.GetUserId()}
	err := s.db.QueryRowContext(ctx, `SELECT balance, frozen FROM accounts WHERE user_id = ?`, req.GetUserId()).Scan(&a.Balance, &a.Frozen)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(codes.NotFound, shopv1.ErrorReason_ACCOUNT_NOT_FOUND, "no account for user %d", req.GetUserId())
	}
	if err != nil {
		return nil, fmt.Errorf("get account %d: %w", req.GetUserId(), err)
	}
	return a, nil
}

// GetPayment returns the payment of an order.
func (s *PaymentServer) GetPayment(ctx context.Context, req *shopv1.GetPaymentRequest) (*shopv1.Payment, error) {
	p, err := scanPayment(s.db.QueryRowContext(ctx, paymentSelect+` WHERE order_no = ?`, req.GetOrderNo()))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(codes.NotFound, shopv1.ErrorReason_NOT_FOUND, "no payment for order %q", req.GetOrderNo())
	}
	if err != nil {
		return nil, fmt.Errorf("get payment %s: %w", req.GetOrderNo(), err)
	}
	return p, nil
}

// FreezeTry records a FROZEN payment and moves its amount from the balance
// to frozen, refusing (Aborted) when the balance is short.
func (s *PaymentServer) FreezeTry(ctx context.Context, req *shopv1.PaymentBranchRequest) (*emptypb.Empty, error) {
	if err := validatePaymentBranch(req); err != nil {
		return nil, err
	}
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		return s.take(ctx, tx, gid, req, shopv1.Payment_FROZEN)
	})
	if err != nil {
		return nil, fmt.Errorf("freeze payment %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// Debit is the Saga action: it records a CAPTURED payment and takes its
// amount from the balance at once, refusing (Aborted) when the balance is
// short.
func (s *PaymentServer) Debit(ctx context.Context, req *shopv1.PaymentBranchRequest) (*emptypb.Empty, error) {
	if err := validatePaymentBranch(req); err != nil {
		return nil, err
	}
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		return s.take(ctx, tx, gid, req, shopv1.Payment_CAPTURED)
	})
	if err != nil {
		return nil, fmt.Errorf("debit payment %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// take records the order's payment of transaction gid as FROZEN (the
// amount moves from the balance to frozen) or CAPTURED (it leaves the
// balance). It refuses a second payment for the order and a short balance.
func (s *PaymentServer) take(ctx context.Context, tx *sql.Tx, gid string, req *shopv1.PaymentBranchRequest, as shopv1.Payment_Status) error {
	now := s.now().UTC()
	_, err := tx.ExecContext(ctx, `INSERT INTO payments (order_no, gid, user_id, amount, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		req.GetOrderNo(), gid, req.GetUserId(), req.GetAmount(), as.String(), now, now)
	if isDuplicate(err) {
		return refused(shopv1.ErrorReason_PAYMENT_CONFLICT, "order %s already has a payment", req.GetOrderNo())
	}
	if err != nil {
		return fmt.Errorf("insert payment: %w", err)
	}
	if req.GetAmount() == 0 {
		return nil
	}
	frozen := int64(0)
	if as == shopv1.Payment_FROZEN {
		frozen = req.GetAmount()
	}
	res, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance - ?, frozen = frozen + ?, updated_at = ? WHERE user_id = ? AND balance >= ?`,
		req.GetAmount(), frozen, now, req.GetUserId(), req.GetAmount())
	if err != nil {
		return fmt.Errorf("take from balance: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	var balance int64
	err = tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE user_id = ?`, req.GetUserId()).Scan(&balance)
	if errors.Is(err, sql.ErrNoRows) {
		return refused(shopv1.ErrorReason_ACCOUNT_NOT_FOUND, "no account for user %d", req.GetUserId())
	}
	if err != nil {
		return fmt.Errorf("read balance: %w", err)
	}
	return refused(shopv1.ErrorReason_INSUFFICIENT_BALANCE, "balance %d is less than %d", balance, req.GetAmount())
}

// CaptureConfirm takes the frozen amount: the payment becomes CAPTURED.
func (s *PaymentServer) CaptureConfirm(ctx context.Context, req *shopv1.PaymentBranchRequest) (*emptypb.Empty, error) {
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		p, err := lockPayment(ctx, tx, req.GetOrderNo())
		if err != nil {
			return err
		}
		switch {
		case p == nil || p.Gid != gid:
			// DTM confirms only after every Try succeeded, so this is a bug
			// or lost data: fail loudly and let DTM retry.
			return fmt.Errorf("no frozen payment of transaction %s", gid)
		case p.Status == shopv1.Payment_CAPTURED:
			return nil
		case p.Status != shopv1.Payment_FROZEN:
			return fmt.Errorf("payment is %s, cannot capture", p.Status)
		}
		return s.settle(ctx, tx, p, shopv1.Payment_CAPTURED)
	})
	if err != nil {
		return nil, fmt.Errorf("capture payment %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// UnfreezeCancel returns the frozen amount to the balance: the payment
// becomes RELEASED. A payment that was never frozen, or belongs to another
// transaction, is left alone.
func (s *PaymentServer) UnfreezeCancel(ctx context.Context, req *shopv1.PaymentBranchRequest) (*emptypb.Empty, error) {
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		p, err := lockPayment(ctx, tx, req.GetOrderNo())
		if err != nil || p == nil || p.Gid != gid || p.Status != shopv1.Payment_FROZEN {
			return err
		}
		return s.settle(ctx, tx, p, shopv1.Payment_RELEASED)
	})
	if err != nil {
		return nil, fmt.Errorf("unfreeze payment %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// DebitRevert is the Saga compensation: a payment this transaction debited
// goes back to the balance and becomes RELEASED. A payment that was never
// debited (null compensation), or belongs to another transaction, is left
// alone: it never refuses.
func (s *PaymentServer) DebitRevert(ctx context.Context, req *shopv1.PaymentBranchRequest) (*emptypb.Empty, error) {
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		p, err := lockPayment(ctx, tx, req.GetOrderNo())
		if err != nil || p == nil || p.Gid != gid || p.Status != shopv1.Payment_CAPTURED {
			return err
		}
		return s.giveBack(ctx, tx, p, shopv1.Payment_RELEASED)
	})
	if err != nil {
		return nil, fmt.Errorf("revert debit %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// Refund is the refund's 2-phase message branch: the order's CAPTURED
// payment becomes REFUNDED and its amount goes back to the balance. A
// message branch must complete, so it answers OK when there is nothing to
// give back (REFUNDED already, or RELEASED by a rollback). A payment still
// FROZEN (its TCC Confirm is being retried) is ONGOING (FailedPrecondition,
// which DTM retries at a fixed interval); a missing one is an error DTM
// retries, and worth an alert.
func (s *PaymentServer) Refund(ctx context.Context, req *shopv1.PaymentBranchRequest) (*emptypb.Empty, error) {
	if err := validatePaymentBranch(req); err != nil {
		return nil, err
	}
	err := inBarrier(ctx, s.db, func(tx *sql.Tx, gid string) error {
		p, err := lockPayment(ctx, tx, req.GetOrderNo())
		switch {
		case err != nil:
			return err
		case p == nil:
			return fmt.Errorf("refund %s: order %s has no payment", gid, req.GetOrderNo())
		case p.Status == shopv1.Payment_FROZEN:
			return errorf(codes.FailedPrecondition, shopv1.ErrorReason_PAYMENT_NOT_CAPTURED, "payment of order %s is not captured yet", p.OrderNo)
		case p.Status != shopv1.Payment_CAPTURED:
			return nil
		}
		return s.giveBack(ctx, tx, p, shopv1.Payment_REFUNDED)
	})
	if err != nil {
		return nil, fmt.Errorf("refund payment %s: %w", req.GetOrderNo(), err)
	}
	return &emptypb.Empty{}, nil
}

// giveBack returns a CAPTURED payment's amount to the balance: RELEASED
// (a Saga's compensation) or REFUNDED.
func (s *PaymentServer) giveBack(ctx context.Context, tx *sql.Tx, p *shopv1.Payment, to shopv1.Payment_Status) error {
	now := s.now().UTC()
	if _, err := tx.ExecContext(ctx, `UPDATE payments SET status = ?, updated_at = ? WHERE order_no = ?`, to.String(), now, p.OrderNo); err != nil {
		return fmt.Errorf("set payment %s: %w", to, err)
	}
	if p.Amount == 0 {
		return nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + ?, updated_at = ? WHERE user_id = ?`, p.Amount, now, p.UserId)
	if err != nil {
		return fmt.Errorf("update account %d: %w", p.UserId, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("no account %d to give %d back to (rows %d, %v)", p.UserId, p.Amount, n, err)
	}
	return nil
}

// settle moves a FROZEN payment to CAPTURED (the frozen amount leaves the
// account) or RELEASED (it goes back to the balance).
func (s *PaymentServer) settle(ctx context.Context, tx *sql.Tx, p *shopv1.Payment, to shopv1.Payment_Status) error {
	now := s.now().UTC()
	if _, err := tx.ExecContext(ctx, `UPDATE payments SET status = ?, updated_at = ? WHERE order_no = ?`, to.String(), now, p.OrderNo); err != nil {
		return fmt.Errorf("set payment %s: %w", to, err)
	}
	if p.Amount == 0 {
		return nil
	}
	var back int64
	if to == shopv1.Payment_RELEASED {
		back = p.Amount
	}
	res, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + ?, frozen = frozen - ?, updated_at = ? WHERE user_id = ? AND frozen >= ?`,
		back, p.Amount, now, p.UserId, p.Amount)
	if err != nil {
		return fmt.Errorf("update account %d: %w", p.UserId, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("account %d does not hold %d frozen (rows %d, %v)", p.UserId, p.Amount, n, err)
	}
	return nil
}

func validatePaymentBranch(req *shopv1.PaymentBranchRequest) error {
	switch {
	case !validOrderNo(req.GetOrderNo()):
		return invalid("order_no", "must be 1-64 letters, digits, '-' or '_'")
	case req.GetUserId() <= 0:
		return invalid("user_id", "must be positive")
	case req.GetAmount() < 0:
		return invalid("amount", "must not be negative")
	}
	return nil
}

const paymentSelect = `SELECT order_no, gid, user_id, amount, status, created_at, updated_at FROM payments`

// lockPayment reads and locks the payment of orderNo; nil when there is none.
func lockPayment(ctx context.Context, tx *sql.Tx, orderNo string) (*shopv1.Payment, error) {
	p, err := scanPayment(tx.QueryRowContext(ctx, paymentSelect+` WHERE order_no = ? FOR UPDATE`, orderNo))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock payment: %w", err)
	}
	return p, nil
}

func scanPayment(row *sql.Row) (*shopv1.Payment, error) {
	var (
		p                shopv1.Payment
		st               string
		created, updated time.Time
	)
	if err := row.Scan(&p.OrderNo, &p.Gid, &p.UserId, &p.Amount, &st, &created, &updated); err != nil {
		return nil, err
	}
	p.Status = shopv1.Payment_Status(shopv1.Payment_Status_value[st])
	p.CreatedAt, p.UpdatedAt = timestamppb.New(created), timestamppb.New(updated)
	return &p, nil
}
