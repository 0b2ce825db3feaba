package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencoupon/coupon/participant"
)

// The transactional outbox: when events are on (Config.Events), every
// change writes its lifecycle events into coupon_event in the same local
// transaction — the claim batch, the branch with its barrier, the expiry
// sweep, the catalog change — on the same database. Outbox hands them to
// the relay, which publishes them and deletes what was stored.

// OutboxEvent is one row of an outbox.
type OutboxEvent struct {
	// Row is the row's position in its outbox; rows are read in this order.
	Row             int64
	EventID         string
	Type            string
	CouponID        int64
	CouponCode      string
	UserID          int64
	TemplateID      int64
	Seq             int64
	OrderNo         string
	GID             string
	BranchID        string
	DiscountAmount  int64
	RequestID       string
	TemplateVersion int64
	StockAdded      int64
	OccurredAt      time.Time
}

const eventCols = `event_id, type, coupon_id, coupon_code, user_id, template_id, seq, order_no, gid, branch_id,
 discount_amount, request_id, template_version, stock_added, occurred_at`

// eventInsert is the statement writing events, with its arguments; "" when
// there are none.
func eventInsert(evs []OutboxEvent) (string, []any) {
	if len(evs) == 0 {
		return "", nil
	}
	if claimsOnly(evs) {
		// The claim batch's events: only the columns a claim sets.
		args := make([]any, 0, 8*len(evs))
		for _, e := range evs {
			args = append(args, e.EventID, e.Type, e.CouponID, e.CouponCode, e.UserID, e.TemplateID, e.RequestID, e.OccurredAt.UTC())
		}
		return `INSERT INTO coupon_event (event_id, type, coupon_id, coupon_code, user_id, template_id, request_id, occurred_at, seq) VALUES ` +
			placeholders("(?,?,?,?,?,?,?,?,1)", len(evs)), args
	}
	args := make([]any, 0, 15*len(evs))
	for _, e := range evs {
		args = append(args, e.EventID, e.Type, e.CouponID, e.CouponCode, e.UserID, e.TemplateID, e.Seq, e.OrderNo,
			e.GID, e.BranchID, e.DiscountAmount, e.RequestID, e.TemplateVersion, e.StockAdded, e.OccurredAt.UTC())
	}
	return `INSERT INTO coupon_event (` + eventCols + `) VALUES ` + placeholders("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", len(evs)), args
}

func claimsOnly(evs []OutboxEvent) bool {
	for _, e := range evs {
		if e.Type != participant.EventClaimed || e.Seq != 1 {
			return false
		}
	}
	return true
}

// claimedEvent is a new coupon's first event.
func claimedEvent(c *participant.Coupon) OutboxEvent {
	return OutboxEvent{EventID: participant.EventID(c.Code, 1), Type: participant.EventClaimed, CouponID: c.ID,
		CouponCode: c.Code, UserID: c.UserID, TemplateID: c.TemplateID, Seq: 1, RequestID: c.RequestID, OccurredAt: c.ClaimedAt}
}

// changeEvents are the events of a branch's change to c, numbered after
// c's latest.
func changeEvents(br participant.Branch, c *participant.Coupon, ch *participant.Change) []OutboxEvent {
	evs := ch.Events()
	out := make([]OutboxEvent, len(evs))
	for i, ev := range evs {
		seq := c.EventSeq + int64(i) + 1
		e := OutboxEvent{EventID: participant.EventID(c.Code, seq), Type: ev.Type, CouponID: c.ID, CouponCode: c.Code,
			UserID: c.UserID, TemplateID: c.TemplateID, Seq: seq, GID: br.GID, BranchID: br.BranchID, OccurredAt: ch.At}
		if ev.Entry != nil {
			e.OrderNo, e.DiscountAmount = ev.Entry.OrderNo, ev.Entry.Discount
		}
		if ch.Return != nil && ev.Type == participant.EventReturned {
			e.RequestID = ch.Return.RequestID
		}
		out[i] = e
	}
	return out
}

// writeEvents writes events in tx when events are on.
func (s *shards) writeEvents(ctx context.Context, tx *sql.Tx, evs ...OutboxEvent) error {
	q, args := eventInsert(evs)
	if !s.events || q == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, q, args...)
	return err
}

// templateChanged is the event of a template's change to version v.
func templateChanged(id, v int64, at time.Time) OutboxEvent {
	return OutboxEvent{EventID: fmt.Sprintf("template-%d.v%d", id, v), Type: participant.EventTemplateChanged,
		TemplateID: id, TemplateVersion: v, OccurredAt: at}
}

// Outbox reads and deletes outbox rows for the relay. Its sources are the
// main database (0) and the shard databases (1..n).
type Outbox struct{ *shards }

// Sources names each outbox: "main", "shard_0", ….
func (s *Outbox) Sources() []string {
	out := []string{"main"}
	for i := range s.dbs {
		out = append(out, fmt.Sprintf("shard_%d", i))
	}
	return out
}

func (s *Outbox) db(src int) (*sql.DB, error) {
	if src == 0 {
		return s.main, nil
	}
	if src < 0 || src > len(s.dbs) {
		return nil, fmt.Errorf("outbox %d out of range", src)
	}
	return s.dbs[src-1], nil
}

// Pending reads up to limit of the oldest rows of outbox src.
func (s *Outbox) Pending(ctx context.Context, src, limit int) ([]OutboxEvent, error) {
	db, err := s.db(src)
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT id, `+eventCols+` FROM coupon_event ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return nil, wrap("read outbox", err)
	}
	defer rows.Close()
	var out []OutboxEvent
	for rows.Next() {
		var e OutboxEvent
		if err := rows.Scan(&e.Row, &e.EventID, &e.Type, &e.CouponID, &e.CouponCode, &e.UserID, &e.TemplateID, &e.Seq,
			&e.OrderNo, &e.GID, &e.BranchID, &e.DiscountAmount, &e.RequestID, &e.TemplateVersion, &e.StockAdded, &e.OccurredAt); err != nil {
			return nil, wrap("read outbox", err)
		}
		out = append(out, e)
	}
	return out, wrap("read outbox", rows.Err())
}

// Delete deletes rows of outbox src.
func (s *Outbox) Delete(ctx context.Context, src int, rows []int64) error {
	if len(rows) == 0 {
		return nil
	}
	db, err := s.db(src)
	if err != nil {
		return err
	}
	args := make([]any, len(rows))
	for i, r := range rows {
		args[i] = r
	}
	_, err = db.ExecContext(ctx, `DELETE FROM coupon_event WHERE id IN (?`+strings.Repeat(",?", len(rows)-1)+`)`, args...)
	return wrap("delete outbox rows", err)
}

// Backlog estimates the rows of outbox src (the span of their row
// numbers, which the relay deletes in order, so gaps are few) and says
// when its first row occurred (zero when empty). Both are read by primary
// key: cheap even when the relay has fallen far behind.
func (s *Outbox) Backlog(ctx context.Context, src int) (n int64, oldest time.Time, err error) {
	db, err := s.db(src)
	if err != nil {
		return 0, time.Time{}, err
	}
	var first, last sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MIN(id), MAX(id) FROM coupon_event`).Scan(&first, &last); err != nil {
		return 0, time.Time{}, wrap("measure outbox", err)
	}
	if !first.Valid {
		return 0, time.Time{}, nil
	}
	err = db.QueryRowContext(ctx, `SELECT occurred_at FROM coupon_event WHERE id = ?`, first.Int64).Scan(&oldest)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil // published meanwhile
	}
	return last.Int64 - first.Int64 + 1, oldest, wrap("measure outbox", err)
}
