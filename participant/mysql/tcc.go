package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/internal/janitor"
	"github.com/opencoupon/coupon/participant"
)

// Branches runs DTM branches on the coupon records under DTM's branch
// barrier (participant.Branches).
type Branches struct{ *shards }

var _ participant.Branches = (*Branches)(nil)

// BarrierTable is DTM's barrier table inside every shard database.
const BarrierTable = "barrier"

// Apply runs a branch under DTM's branch barrier in one transaction on the
// user's shard: the barrier rows, the coupon row locked FOR UPDATE, the
// domain's decision, the coupon change, its daily-use counts and its ledger
// rows commit or roll back together. It keeps dtmcli.BranchBarrier's table
// and semantics — a Cancel (or compensation) first inserts its Try's
// (action's) row, and finding it absent is null compensation; a branch
// whose own row exists already is a duplicate or a hanging Try, skipped —
// but sends the barrier rows and the coupon lock in one round trip. A call
// without barrier metadata (br.Op empty) runs the same transaction without
// barrier rows. Deadlocks are retried: the barrier rows rolled back with
// them.
func (s *Branches) Apply(ctx context.Context, br participant.Branch, userID int64, code string, decide participant.Decide) (participant.Outcome, error) {
	sh := s.ofUser(userID)
	id, ok := participant.CodeID(code)
	if !ok {
		return participant.Outcome{}, notFound("coupon", code)
	}
	var (
		err error
		out participant.Outcome
	)
	for attempt := 0; attempt < 5; attempt++ {
		out, err = applyOnce(ctx, sh, br, userID, id, code, decide, s.events)
		if !isRetryable(err) {
			break
		}
	}
	if err != nil {
		return participant.Outcome{}, wrap("coupon branch "+br.Op, err)
	}
	return out, nil
}

// BarrierJanitor is a janitor of the barrier table of every shard
// database (see internal/janitor).
func (s *Branches) BarrierJanitor(cfg janitor.Config) (*janitor.Janitor, error) {
	return janitor.New(cfg, s.dbs...)
}

// originOp is the op whose barrier row a compensation inserts first.
var originOp = map[string]string{
	dtmimp.OpCancel:     dtmimp.OpTry,
	dtmimp.OpCompensate: dtmimp.OpAction,
	dtmimp.OpRollback:   dtmimp.OpAction,
}

// barrierID numbers the first (only) barrier of a branch call, as dtmcli does.
const barrierID = "01"

func applyOnce(ctx context.Context, sh shard, br participant.Branch, userID, id int64, code string, decide participant.Decide, events bool) (out participant.Outcome, err error) {
	// The transaction is two round trips on a connection of its own: the
	// first opens it, writes the barrier rows and locks the coupon; the
	// second writes the change and commits. database/sql's Tx would add a
	// round trip for BEGIN and one for COMMIT.
	conn, err := sh.db.Conn(ctx)
	if err != nil {
		return out, err
	}
	open := true // a transaction may be open on conn
	defer func() {
		if open {
			abandon(ctx, conn)
		}
		_ = conn.Close()
	}()
	q := []string{"START TRANSACTION"}
	var args []any
	insert := `INSERT IGNORE INTO ` + BarrierTable + ` (trans_type, gid, branch_id, op, barrier_id, reason) VALUES (?,?,?,?,?,?); SELECT ROW_COUNT()`
	origin := originOp[br.Op]
	counts := 0
	if br.Op != "" {
		if origin != "" {
			q = append(q, insert)
			args = append(args, br.TransType, br.GID, br.BranchID, origin, barrierID, br.Op)
			counts++
		}
		q = append(q, insert)
		args = append(args, br.TransType, br.GID, br.BranchID, br.Op, barrierID, br.Op)
		counts++
	}
	q = append(q, `SELECT `+couponCols+` FROM coupon_`+sh.suffix()+` WHERE id = ? AND code = ? AND user_id = ? FOR UPDATE`)
	args = append(args, id, code, userID)
	rows, err := conn.QueryContext(ctx, strings.Join(q, ";\n"), args...)
	if err != nil {
		return out, err
	}
	var affected []int64
	var c *participant.Coupon
	for {
		for rows.Next() {
			if len(affected) < counts {
				var n int64
				if err := rows.Scan(&n); err != nil {
					rows.Close()
					return out, err
				}
				affected = append(affected, n)
				continue
			}
			if c, err = scanCoupon(rows); err != nil {
				rows.Close()
				return out, err
			}
		}
		if !rows.NextResultSet() {
			break
		}
	}
	if err := rows.Close(); err != nil {
		return out, err
	}
	if err := rows.Err(); err != nil {
		return out, err
	}
	commit := func(stmts []string, args []any) error {
		_, err := conn.ExecContext(ctx, strings.Join(append(stmts, "COMMIT"), ";\n"), args...)
		var me *mysql.MySQLError
		if err != nil && !errors.As(err, &me) {
			// Lost on the way: the COMMIT may have run.
			return fmt.Errorf("%w: %w", participant.ErrCommitUnknown, err)
		}
		// A server error stopped the statements before COMMIT ran; the
		// deferred ROLLBACK ends the transaction.
		open = err != nil
		return err
	}
	if br.Op != "" {
		if len(affected) != counts {
			return out, fmt.Errorf("barrier: %d of %d row counts read", len(affected), counts)
		}
		nullCompensation := origin != "" && affected[0] > 0
		if nullCompensation || affected[len(affected)-1] == 0 {
			// Skipped: commit the barrier rows, leave the coupon as it is.
			if err := commit(nil, nil); err != nil {
				return out, err
			}
			if c == nil {
				return out, notFound("coupon", code)
			}
			return participant.Outcome{Coupon: c, Skipped: true}, nil
		}
	}
	if c == nil {
		return out, notFound("coupon", code)
	}
	ch, err := decide(c)
	if err != nil {
		return participant.Outcome{}, err
	}
	if ch == nil {
		if err := commit(nil, nil); err != nil {
			return out, err
		}
		return participant.Outcome{Coupon: c}, nil
	}
	stmts, wargs := changeStatements(sh, br, c, ch, events)
	if err := writeError(commit(stmts, wargs), ch); err != nil {
		return participant.Outcome{}, err
	}
	return participant.Outcome{Coupon: changed(c, ch), Changed: true}, nil
}

// abandon ends a transaction left open on conn by a failed round trip. A
// connection that cannot roll back is discarded: closing it makes the
// server roll back.
func abandon(ctx context.Context, conn *sql.Conn) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if _, err := conn.ExecContext(rctx, "ROLLBACK"); err != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
}

// changed is the coupon c after ch.
func changed(c *participant.Coupon, ch *participant.Change) *participant.Coupon {
	n := *c
	n.Status, n.OrderNo, n.DiscountAmount = ch.Status, ch.OrderNo, ch.Discount
	n.LockGID, n.LockBranch, n.LockedAt, n.UsedAt = ch.GID, ch.BranchID, ch.LockedAt, ch.UsedAt
	n.EventSeq += int64(len(ch.Events()))
	return &n
}

func nullTime(t time.Time) sql.NullTime {
	return sql.NullTime{Time: t.UTC(), Valid: !t.IsZero()}
}

// changeStatements are the daily-use counts, the coupon update, the
// ledger rows and (events on) the events of a change, sent with the COMMIT
// in the branch transaction's second round trip; a count past its cap
// fails the CHECK on daily_use (error 4025) and refuses the change. The
// coupon's event count moves on whether events are on or not, so that
// sequence numbers never depend on the setting.
func changeStatements(sh shard, br participant.Branch, c *participant.Coupon, ch *participant.Change, events bool) ([]string, []any) {
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
	stmts = append(stmts, `UPDATE coupon_`+sh.suffix()+` SET status = ?, order_no = ?, discount_amount = ?,
 lock_gid = ?, lock_branch = ?, locked_at = ?, used_at = ?, updated_at = ?, event_seq = event_seq + ? WHERE id = ?`)
	evs := changeEvents(br, c, ch)
	args = append(args, ch.Status, ch.OrderNo, ch.Discount, ch.GID, ch.BranchID, nullTime(ch.LockedAt), nullTime(ch.UsedAt), at, len(evs), c.ID)
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
	if !events {
		return stmts, args // the events are only counted (event_seq), not encoded
	}
	if q, eargs := eventInsert(evs); q != "" {
		stmts = append(stmts, q)
		args = append(args, eargs...)
	}
	return stmts, args
}

// writeError turns the server's refusals of a change into domain errors.
func writeError(err error, ch *participant.Change) error {
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

// Owner looks the code's coupon ID up in every table, by primary key.
func (s *Branches) Owner(ctx context.Context, code string) (int64, bool, error) {
	id, ok := participant.CodeID(code)
	if !ok {
		return 0, false, nil
	}
	var owner int64
	found := false
	err := s.perShardQuery(ctx,
		func(t int) string { return fmt.Sprintf("SELECT user_id FROM coupon_%04d WHERE id = ? AND code = ?", t) },
		func() []any { return []any{id, code} },
		func(r *sql.Rows) error {
			found = true
			return r.Scan(&owner)
		})
	return owner, found, wrap("find coupon owner", err)
}

// ReturnRecord reads the return a request ID made in the user's shard
// database, whoever's it is.
func (s *Branches) ReturnRecord(ctx context.Context, userID int64, requestID string) (*participant.ReturnRecord, error) {
	var r participant.ReturnRecord
	err := s.ofUser(userID).db.QueryRowContext(ctx, `SELECT request_id, coupon_id, user_id, order_no, reason, created_at
 FROM coupon_return WHERE request_id = ?`, requestID).Scan(&r.RequestID, &r.CouponID, &r.UserID, &r.OrderNo, &r.Reason, &r.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("read coupon return", err)
	}
	return &r, nil
}
