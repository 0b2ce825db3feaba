package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/opencoupon/coupon/participant"
)

// Expiry is the storage side of the expiry sweep (participant.Expirer).
type Expiry struct{ *shards }

var _ participant.Expirer = (*Expiry)(nil)

// ShardTables lists the coupon tables of each shard database.
func (s *Expiry) ShardTables() [][]int {
	out := make([][]int, len(s.dbs))
	for i := range s.dbs {
		out[i] = s.tablesOf(i)
	}
	return out
}

// ExpireBatch expires up to limit AVAILABLE coupons of one table whose
// expire_at is not after now. The statement walks idx_expire (status,
// expire_at) from its start, so it reads only the rows it changes; each
// batch is its own short transaction. With events on it first locks the
// rows it will change, to write each one's coupon.expired event with it.
func (s *Expiry) ExpireBatch(ctx context.Context, table int, now time.Time, limit int) (int, error) {
	if table < 0 || table >= s.tables() || limit <= 0 {
		return 0, fmt.Errorf("expire coupons: table %d or limit %d out of range", table, limit)
	}
	now = now.UTC()
	var n int64
	err := readCommitted(ctx, s.dbs[table/s.perShard], func(tx *sql.Tx) error {
		if s.events {
			var err error
			n, err = expireWithEvents(ctx, tx, table, now, limit)
			return err
		}
		res, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE coupon_%04d FORCE INDEX (idx_expire)
 SET status = ?, updated_at = ?, event_seq = event_seq + 1 WHERE status = ? AND expire_at <= ? ORDER BY expire_at LIMIT ?`, table),
			participant.CouponExpired, now, participant.CouponAvailable, now, limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, wrap("expire coupons", err)
	}
	return int(n), nil
}

// expireWithEvents is ExpireBatch's transaction with events on.
func expireWithEvents(ctx context.Context, tx *sql.Tx, table int, now time.Time, limit int) (int64, error) {
	rows, err := tx.QueryContext(ctx, fmt.Sprintf(`SELECT id, code, user_id, template_id, event_seq
 FROM coupon_%04d FORCE INDEX (idx_expire) WHERE status = ? AND expire_at <= ? ORDER BY expire_at LIMIT ? FOR UPDATE`, table),
		participant.CouponAvailable, now, limit)
	if err != nil {
		return 0, err
	}
	var evs []OutboxEvent
	var ids []any
	for rows.Next() {
		e := OutboxEvent{Type: participant.EventExpired, OccurredAt: now}
		if err := rows.Scan(&e.CouponID, &e.CouponCode, &e.UserID, &e.TemplateID, &e.Seq); err != nil {
			rows.Close()
			return 0, err
		}
		e.Seq++
		e.EventID = participant.EventID(e.CouponCode, e.Seq)
		evs = append(evs, e)
		ids = append(ids, e.CouponID)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(ids) == 0 {
		return 0, err
	}
	// Under READ COMMITTED the rows locked above stay AVAILABLE until this
	// transaction changes them: nothing else can have moved them.
	args := append([]any{participant.CouponExpired, now}, ids...)
	q := fmt.Sprintf(`UPDATE coupon_%04d SET status = ?, updated_at = ?, event_seq = event_seq + 1 WHERE id IN (?%s)`,
		table, strings.Repeat(",?", len(ids)-1))
	eq, eargs := eventInsert(evs)
	if _, err := tx.ExecContext(ctx, q+";\n"+eq, append(args, eargs...)...); err != nil {
		return 0, err
	}
	return int64(len(ids)), nil
}

// readCommitted runs fn in a READ COMMITTED transaction. The sweep's range
// scans would otherwise take next-key locks on the gaps where claims
// insert new coupons (and TCC moves coupons between statuses), making
// claims wait on, or deadlock with, the sweep; under READ COMMITTED they
// lock only the rows they change.
func readCommitted(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// endBatch caps the templates ended in one transaction.
const endBatch = 500

// EndTemplates moves ACTIVE and PAUSED templates whose valid_until has
// passed to ENDED, bumping their version as every change does.
func (s *Expiry) EndTemplates(ctx context.Context, now time.Time) ([]int64, error) {
	now = now.UTC()
	var all []int64
	for {
		var ids []int64
		err := readCommitted(ctx, s.main, func(tx *sql.Tx) error {
			ids = ids[:0]
			rows, err := tx.QueryContext(ctx, `SELECT id, version FROM coupon_template
 WHERE status IN (?, ?) AND valid_until <= ? ORDER BY id LIMIT ? FOR UPDATE`,
				participant.TemplateActive, participant.TemplatePaused, now, endBatch)
			if err != nil {
				return err
			}
			var evs []OutboxEvent
			for rows.Next() {
				var id, v int64
				if err := rows.Scan(&id, &v); err != nil {
					rows.Close()
					return err
				}
				ids = append(ids, id)
				evs = append(evs, templateChanged(id, v+1, now))
			}
			rows.Close()
			if err := rows.Err(); err != nil || len(ids) == 0 {
				return err
			}
			args := []any{participant.TemplateEnded, now}
			for _, id := range ids {
				args = append(args, id)
			}
			if _, err = tx.ExecContext(ctx, `UPDATE coupon_template SET status = ?, version = version + 1, updated_at = ?
 WHERE id IN (?`+strings.Repeat(",?", len(ids)-1)+`)`, args...); err != nil {
				return err
			}
			return s.writeEvents(ctx, tx, evs...)
		})
		if err != nil {
			return all, wrap("end templates", err)
		}
		all = append(all, ids...)
		if len(ids) < endBatch {
			return all, nil
		}
	}
}
