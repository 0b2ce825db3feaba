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

func barrier(br participant.Branch) *dtmcli.BranchBarrier {
	return &dtmcli.BranchBarrier{
		TransType: br.TransType, Gid: br.GID, BranchID: br.BranchID, Op: br.Op,
		DBType: dtmcli.DBTypeMysql, BarrierTableName: BarrierTable,
	}
}

// Apply runs a branch under the DTM barrier in one transaction on the
// user's shard: the barrier row, the coupon row locked FOR UPDATE, the
// domain's decision, the coupon change, its daily-use counts and its ledger
// rows commit or roll back together. When the barrier skips the branch (a
// duplicate, null compensation or a hanging Try) the coupon is read as it
// stands. Deadlocks are retried: the barrier rows rolled back with them.
func (s *Store) Apply(ctx context.Context, br participant.Branch, userID int64, code string, decide participant.Decide) (participant.Outcome, error) {
	sh := s.ShardOf(userID)
	var (
		err error
		out participant.Outcome
	)
	for attempt := 0; attempt < 5; attempt++ {
		var tx *sql.Tx
		tx, err = sh.DB.BeginTx(ctx, nil)
		if err != nil {
			break
		}
		out = participant.Outcome{Skipped: true}
		run := barrier(br).Call
		if br.Op == "" {
			run = func(tx *sql.Tx, fn dtmcli.BarrierBusiFunc) (err error) {
				// A call made outside DTM (ReturnCoupon without barrier
				// metadata): the same transaction, no barrier rows.
				if err = fn(tx); err != nil {
					_ = tx.Rollback()
					return err
				}
				return tx.Commit()
			}
		}
		err = run(tx, func(tx *sql.Tx) error {
			out.Skipped = false
			c, err := lockCoupon(ctx, tx, sh, userID, code)
			if err != nil {
				return err
			}
			ch, err := decide(c)
			if err != nil || ch == nil {
				out.Coupon = c
				return err
			}
			if err := writeChange(ctx, tx, sh, br, c, ch); err != nil {
				return err
			}
			out.Coupon, out.Changed = changed(c, ch), true
			return nil
		})
		if !isRetryable(err) {
			break
		}
	}
	if err != nil {
		return participant.Outcome{}, wrap("coupon branch "+br.Op, err)
	}
	if out.Skipped {
		c, err := s.ByCode(ctx, userID, code)
		if err != nil {
			return participant.Outcome{}, err
		}
		out.Coupon = c
	}
	return out, nil
}

// lockCoupon reads the user's coupon FOR UPDATE.
func lockCoupon(ctx context.Context, tx *sql.Tx, sh Shard, userID int64, code string) (*participant.Coupon, error) {
	c, err := scanCoupon(tx.QueryRowContext(ctx, `SELECT `+couponCols+` FROM coupon_`+sh.Suffix()+
		` WHERE code = ? AND user_id = ? FOR UPDATE`, code, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("coupon", code)
	}
	return c, err
}

// changed is the coupon c after ch.
func changed(c *participant.Coupon, ch *participant.Change) *participant.Coupon {
	n := *c
	n.Status, n.OrderNo, n.DiscountAmount = ch.Status, ch.OrderNo, ch.Discount
	n.LockGID, n.LockBranch, n.LockedAt, n.UsedAt = ch.GID, ch.BranchID, ch.LockedAt, ch.UsedAt
	return &n
}

func nullTime(t time.Time) sql.NullTime {
	return sql.NullTime{Time: t.UTC(), Valid: !t.IsZero()}
}

// writeChange sends the daily-use counts, the coupon update and the
// ledger rows in one multi-statement round trip of the branch's
// transaction; a count past its cap fails the CHECK on daily_use (error
// 4025) and refuses the change.
func writeChange(ctx context.Context, tx *sql.Tx, sh Shard, br participant.Branch, c *participant.Coupon, ch *participant.Change) error {
	at := ch.At.UTC()
	var stmts []string
	var args []any
	if len(ch.CountUse) > 0 {
		stmts = append(stmts, `INSERT INTO daily_use (user_id, day, template_id, used, cap) VALUES `+
			placeholders("(?,?,?,1,?)", len(ch.CountUse))+` ON DUPLICATE KEY UPDATE used = used + 1, cap = VALUES(cap)`)
		for _, l := range ch.CountUse {
			args = append(args, c.UserID, at.Format(time.DateOnly), l.TemplateID, l.Limit)
		}
	}
	stmts = append(stmts, `UPDATE coupon_`+sh.Suffix()+` SET status = ?, order_no = ?, discount_amount = ?,
 lock_gid = ?, lock_branch = ?, locked_at = ?, used_at = ?, updated_at = ? WHERE id = ?`)
	args = append(args, ch.Status, ch.OrderNo, ch.Discount, ch.GID, ch.BranchID, nullTime(ch.LockedAt), nullTime(ch.UsedAt), at, c.ID)
	if ch.GiveBackUse && !c.LockedAt.IsZero() {
		// Exactly what the Try counted: the template's and the
		// all-templates count of the day it locked.
		stmts = append(stmts, `UPDATE daily_use SET used = used - 1 WHERE user_id = ? AND day = ? AND template_id IN (0, ?) AND used > 0`)
		args = append(args, c.UserID, c.LockedAt.UTC().Format(time.DateOnly), c.TemplateID)
	}
	if ch.Return != nil {
		stmts = append(stmts, `INSERT INTO coupon_return (request_id, coupon_id, user_id, order_no, reason, created_at) VALUES (?,?,?,?,?,?)`)
		args = append(args, ch.Return.RequestID, c.ID, c.UserID, ch.Return.OrderNo, ch.Return.Reason, at)
	}
	if len(ch.Ledger) > 0 {
		stmts = append(stmts, `INSERT INTO coupon_ledger (op, order_no, gid, branch_id, coupon_id, coupon_code,
 user_id, template_id, discount_amount, created_at) VALUES `+placeholders("(?,?,?,?,?,?,?,?,?,?)", len(ch.Ledger)))
		for _, e := range ch.Ledger {
			args = append(args, e.Op, e.OrderNo, br.GID, br.BranchID, c.ID, c.Code, c.UserID, c.TemplateID, e.Discount, at)
		}
	}
	_, err := tx.ExecContext(ctx, strings.Join(stmts, ";\n"), args...)
	if _, dup := isDuplicate(err); dup && ch.Return != nil {
		return participant.ErrDuplicateRequest
	}
	if isCheckFailed(err) {
		return participant.Errorf(participant.EABORTED, participant.ReasonDailyUseLimitReached,
			"daily use limit reached (%s)", describeLimits(ch.CountUse))
	}
	return err
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

// ReturnRecord reads the return a request ID made in the user's shard
// database, whoever's it is.
func (s *Store) ReturnRecord(ctx context.Context, userID int64, requestID string) (*participant.ReturnRecord, error) {
	var r participant.ReturnRecord
	err := s.ShardOf(userID).DB.QueryRowContext(ctx, `SELECT request_id, coupon_id, user_id, order_no, reason, created_at
 FROM coupon_return WHERE request_id = ?`, requestID).Scan(&r.RequestID, &r.CouponID, &r.UserID, &r.OrderNo, &r.Reason, &r.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("read coupon return", err)
	}
	return &r, nil
}
