package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/participant"
)

var _ participant.Branches = (*Store)(nil)

// BarrierTable is DTM's barrier table inside every shard database.
const BarrierTable = "barrier"

// Ledger operations.
const (
	OpLock    = "LOCK"
	OpConsume = "CONSUME"
	OpRelease = "RELEASE"
)

func barrier(br participant.Branch) *dtmcli.BranchBarrier {
	return &dtmcli.BranchBarrier{
		TransType: br.TransType, Gid: br.GID, BranchID: br.BranchID, Op: br.Op,
		DBType: dtmcli.DBTypeMysql, BarrierTableName: BarrierTable,
	}
}

// branch runs fn under the DTM barrier in one transaction on the user's
// shard and returns the coupon as fn left it; when the barrier skipped fn
// (a duplicate, null compensation or a hanging Try) it reads the coupon as
// it stands. Deadlocks are retried: the barrier rows rolled back with them.
func (s *Store) branch(ctx context.Context, br participant.Branch, userID int64, code string, fn func(tx *sql.Tx, sh Shard) (*participant.Coupon, error)) (*participant.Coupon, error) {
	sh := s.ShardOf(userID)
	var (
		err error
		got *participant.Coupon
	)
	for attempt := 0; attempt < 5; attempt++ {
		var tx *sql.Tx
		tx, err = sh.DB.BeginTx(ctx, nil)
		if err != nil {
			break
		}
		got = nil
		err = barrier(br).Call(tx, func(tx *sql.Tx) error {
			c, err := fn(tx, sh)
			got = c
			return err
		})
		if !isRetryable(err) {
			break
		}
	}
	if err != nil {
		return nil, wrap("coupon branch "+br.Op, err)
	}
	if got != nil {
		return got, nil
	}
	return s.ByCode(ctx, userID, code)
}

// lockCoupon reads the user's coupon FOR UPDATE, with when it was locked.
func lockCoupon(ctx context.Context, tx *sql.Tx, sh Shard, userID int64, code string) (*participant.Coupon, sql.NullTime, error) {
	var lockedAt sql.NullTime
	var c participant.Coupon
	var used sql.NullTime
	err := tx.QueryRowContext(ctx, `SELECT `+couponCols+`, locked_at FROM coupon_`+sh.Suffix()+
		` WHERE code = ? AND user_id = ? FOR UPDATE`, code, userID).Scan(&c.ID, &c.Code, &c.TemplateID, &c.CampaignID,
		&c.UserID, &c.RequestID, &c.Status, &c.ClaimedAt, &c.ExpireAt, &c.OrderNo, &c.DiscountAmount, &used, &lockedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, lockedAt, notFound("coupon", code)
	}
	c.UsedAt = used.Time
	return &c, lockedAt, err
}

func isCheckFailed(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 4025
}

func describeLimits(ls []participant.DailyLimit) string {
	var parts []string
	for _, l := range ls {
		if l.Limit == 0 {
			continue
		}
		if l.TemplateID == 0 {
			parts = append(parts, fmt.Sprintf("%d a day across coupons", l.Limit))
		} else {
			parts = append(parts, fmt.Sprintf("%d a day for template %d", l.Limit, l.TemplateID))
		}
	}
	return strings.Join(parts, ", ")
}

// writeWithLedger runs the change statements and appends the ledger row
// in one multi-statement round trip of the branch's transaction.
func writeWithLedger(ctx context.Context, tx *sql.Tx, stmts []string, args []any, op string, br participant.Branch, c *participant.Coupon, orderNo string, discount int64, now time.Time) error {
	stmts = append(stmts, `INSERT INTO coupon_ledger (op, order_no, gid, branch_id, coupon_id, coupon_code,
 user_id, template_id, discount_amount, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)`)
	args = append(args, op, orderNo, br.GID, br.BranchID, c.ID, c.Code, c.UserID, c.TemplateID, discount, now)
	_, err := tx.ExecContext(ctx, strings.Join(stmts, ";\n"), args...)
	return err
}

// Lock reserves the coupon for an order (TCC Try).
func (s *Store) Lock(ctx context.Context, br participant.Branch, userID int64, code string, decide func(*participant.Coupon) (participant.Reservation, error)) (*participant.Coupon, error) {
	return s.branch(ctx, br, userID, code, func(tx *sql.Tx, sh Shard) (*participant.Coupon, error) {
		c, _, err := lockCoupon(ctx, tx, sh, userID, code)
		if err != nil {
			return nil, err
		}
		res, err := decide(c)
		if participant.IsAlreadyLocked(err) {
			return c, nil
		}
		if err != nil {
			return nil, err
		}
		// The daily counts, the coupon and its ledger row in one round trip;
		// a count past its cap fails the CHECK on daily_use (error 4025).
		day := res.Day.UTC().Format(time.DateOnly)
		var stmts []string
		var args []any
		if len(res.Limits) > 0 {
			stmts = append(stmts, `INSERT INTO daily_use (user_id, day, template_id, used, cap) VALUES `+
				placeholders("(?,?,?,1,?)", len(res.Limits))+` ON DUPLICATE KEY UPDATE used = used + 1, cap = VALUES(cap)`)
			for _, l := range res.Limits {
				args = append(args, userID, day, l.TemplateID, l.Limit)
			}
		}
		stmts = append(stmts, `UPDATE coupon_`+sh.Suffix()+` SET status = ?, order_no = ?, discount_amount = ?, locked_at = ?, updated_at = ? WHERE id = ?`)
		args = append(args, participant.CouponLocked, res.OrderNo, res.Discount, res.Day.UTC(), res.Day.UTC(), c.ID)
		err = writeWithLedger(ctx, tx, stmts, args, OpLock, br, c, res.OrderNo, res.Discount, res.Day.UTC())
		if isCheckFailed(err) {
			return nil, participant.Errorf(participant.EABORTED, participant.ReasonDailyUseLimitReached,
				"daily use limit reached (%s)", describeLimits(res.Limits))
		}
		if err != nil {
			return nil, err
		}
		c.Status, c.OrderNo, c.DiscountAmount = participant.CouponLocked, res.OrderNo, res.Discount
		return c, nil
	})
}

// Consume marks the coupon locked by orderNo as used (TCC Confirm).
func (s *Store) Consume(ctx context.Context, br participant.Branch, userID int64, code, orderNo string, now time.Time) (*participant.Coupon, error) {
	return s.branch(ctx, br, userID, code, func(tx *sql.Tx, sh Shard) (*participant.Coupon, error) {
		c, _, err := lockCoupon(ctx, tx, sh, userID, code)
		if err != nil {
			return nil, err
		}
		if c.Status != participant.CouponLocked || c.OrderNo != orderNo {
			return c, nil // already consumed, or never locked by this order
		}
		update := `UPDATE coupon_` + sh.Suffix() + ` SET status = ?, used_at = ?, updated_at = ? WHERE id = ?`
		if err := writeWithLedger(ctx, tx, []string{update}, []any{participant.CouponUsed, now, now, c.ID},
			OpConsume, br, c, orderNo, c.DiscountAmount, now); err != nil {
			return nil, err
		}
		c.Status, c.UsedAt = participant.CouponUsed, now
		return c, nil
	})
}

// Release gives the coupon locked by orderNo back (TCC Cancel).
func (s *Store) Release(ctx context.Context, br participant.Branch, userID int64, code, orderNo string, now time.Time) (*participant.Coupon, error) {
	return s.branch(ctx, br, userID, code, func(tx *sql.Tx, sh Shard) (*participant.Coupon, error) {
		c, lockedAt, err := lockCoupon(ctx, tx, sh, userID, code)
		if err != nil {
			return nil, err
		}
		if c.Status != participant.CouponLocked || c.OrderNo != orderNo {
			return c, nil // never locked by this order, or already released
		}
		next := participant.CouponAvailable
		if !now.Before(c.ExpireAt) {
			next = participant.CouponExpired
		}
		stmts := []string{`UPDATE coupon_` + sh.Suffix() + ` SET status = ?, order_no = '', discount_amount = 0, locked_at = NULL, updated_at = ? WHERE id = ?`}
		args := []any{next, now, c.ID}
		if lockedAt.Valid {
			// Give back exactly what Try counted: the template's and the
			// all-templates count of the day it locked.
			stmts = append(stmts, `UPDATE daily_use SET used = used - 1 WHERE user_id = ? AND day = ? AND template_id IN (0, ?) AND used > 0`)
			args = append(args, userID, lockedAt.Time.Format(time.DateOnly), c.TemplateID)
		}
		if err := writeWithLedger(ctx, tx, stmts, args, OpRelease, br, c, orderNo, c.DiscountAmount, now); err != nil {
			return nil, err
		}
		released := *c
		released.Status, released.OrderNo, released.DiscountAmount = next, "", 0
		return &released, nil
	})
}

// Owner scans every table for the code.
func (s *Store) Owner(ctx context.Context, code string) (int64, bool, error) {
	var owner int64
	found := false
	err := s.perShardQuery(ctx,
		func(t int) string { return fmt.Sprintf("SELECT user_id FROM coupon_%04d WHERE code = ?", t) },
		func() []any { return []any{code} },
		func(r *sql.Rows) error {
			found = true
			return r.Scan(&owner)
		})
	return owner, found, wrap("find coupon owner", err)
}
