package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/participant"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
)

// The transactional outbox: when events are on (Config.Events), every
// change writes its lifecycle events into coupon_outbox in the same local
// transaction — the claim batch, the branch with its barrier, the expiry
// sweep, the catalog change — on the same database. Outbox hands them to
// the relay, which publishes them and deletes what was stored.

// OutboxEvent is one event of an outbox.
type OutboxEvent struct {
	// Row is the outbox row holding the event; rows are read in this
	// order, and a row's events in the order they were written.
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
	// Data is the event as published: the couponeventsv1.Event message.
	// Set by Pending.
	Data []byte
}

// Event is e's published form.
func (e OutboxEvent) Event() *couponeventsv1.Event {
	return &couponeventsv1.Event{
		Id: e.EventID, Type: e.Type, SchemaVersion: 1, OccurredAt: timestamppb.New(e.OccurredAt),
		CouponCode: e.CouponCode, CouponId: e.CouponID, UserId: e.UserID, TemplateId: e.TemplateID, Sequence: e.Seq,
		OrderNo: e.OrderNo, Gid: e.GID, BranchId: e.BranchID, DiscountAmount: e.DiscountAmount, RequestId: e.RequestID,
		TemplateVersion: e.TemplateVersion, StockAdded: e.StockAdded,
	}
}

// EncodeEvents is the outbox row form of evs: each event's published form
// (couponeventsv1.Event), in order, as the repeated field 1 of a protobuf
// message, so that a row is a valid protobuf and each event is kept
// byte for byte as it will be published.
func EncodeEvents(evs []OutboxEvent) []byte {
	var b []byte
	for _, e := range evs {
		m := e.Event()
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(proto.Size(m)))
		b, _ = proto.MarshalOptions{}.MarshalAppend(b, m) // a well-formed message cannot fail
	}
	return b
}

// decodeEvents reads the events of row (EncodeEvents' form).
func decodeEvents(row int64, b []byte, out []OutboxEvent) ([]OutboxEvent, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return out, fmt.Errorf("outbox row %d: not an event list", row)
		}
		b = b[n:]
		data, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return out, fmt.Errorf("outbox row %d: truncated", row)
		}
		b = b[n:]
		var m couponeventsv1.Event
		if err := proto.Unmarshal(data, &m); err != nil {
			return out, fmt.Errorf("outbox row %d: %w", row, err)
		}
		out = append(out, OutboxEvent{Row: row, EventID: m.GetId(), Type: m.GetType(), CouponID: m.GetCouponId(),
			CouponCode: m.GetCouponCode(), UserID: m.GetUserId(), TemplateID: m.GetTemplateId(), Seq: m.GetSequence(),
			OrderNo: m.GetOrderNo(), GID: m.GetGid(), BranchID: m.GetBranchId(), DiscountAmount: m.GetDiscountAmount(),
			RequestID: m.GetRequestId(), TemplateVersion: m.GetTemplateVersion(), StockAdded: m.GetStockAdded(),
			OccurredAt: m.GetOccurredAt().AsTime(), Data: data})
	}
	return out, nil
}

// eventInsert is the statement writing evs, with its arguments; "" when
// there are none. A transaction's events go into one row however many
// they are: a claim batch of a hundred coupons writes one outbox row, not
// a hundred, which is most of what events cost the database.
func eventInsert(evs []OutboxEvent) (string, []any) {
	if len(evs) == 0 {
		return "", nil
	}
	return `INSERT INTO coupon_outbox (events, n, occurred_at) VALUES (?,?,?)`,
		[]any{EncodeEvents(evs), len(evs), evs[0].OccurredAt.UTC()}
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

// Pending reads the oldest events of outbox src: whole rows, at least
// one, and no more rows once limit events are read.
func (s *Outbox) Pending(ctx context.Context, src, limit int) ([]OutboxEvent, error) {
	db, err := s.db(src)
	if err != nil {
		return nil, err
	}
	// First the rows' sizes, to pick the span of rows holding about limit
	// events; then those rows.
	rows, err := db.QueryContext(ctx, `SELECT id, n FROM coupon_outbox ORDER BY id LIMIT ?`, max(1, limit))
	if err != nil {
		return nil, wrap("read outbox", err)
	}
	var first, last int64
	total := 0
	for rows.Next() && total < limit {
		var id int64
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return nil, wrap("read outbox", err)
		}
		if total == 0 {
			first = id
		}
		last, total = id, total+n
	}
	rows.Close()
	if err := rows.Err(); err != nil || total == 0 {
		return nil, wrap("read outbox", err)
	}
	rows, err = db.QueryContext(ctx, `SELECT id, events FROM coupon_outbox WHERE id BETWEEN ? AND ? ORDER BY id`, first, last)
	if err != nil {
		return nil, wrap("read outbox", err)
	}
	defer rows.Close()
	out := make([]OutboxEvent, 0, total)
	for rows.Next() {
		var id int64
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			return nil, wrap("read outbox", err)
		}
		if out, err = decodeEvents(id, b, out); err != nil {
			return nil, err
		}
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
	_, err = db.ExecContext(ctx, `DELETE FROM coupon_outbox WHERE id IN (?`+strings.Repeat(",?", len(rows)-1)+`)`, args...)
	return wrap("delete outbox rows", err)
}

// Backlog estimates the rows of outbox src (the span of their row
// numbers, which the relay deletes in order, so gaps are few; a row holds
// one transaction's events) and says when its first event occurred (zero
// when empty). Both are read by primary
// key: cheap even when the relay has fallen far behind.
func (s *Outbox) Backlog(ctx context.Context, src int) (n int64, oldest time.Time, err error) {
	db, err := s.db(src)
	if err != nil {
		return 0, time.Time{}, err
	}
	var first, last sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MIN(id), MAX(id) FROM coupon_outbox`).Scan(&first, &last); err != nil {
		return 0, time.Time{}, wrap("measure outbox", err)
	}
	if !first.Valid {
		return 0, time.Time{}, nil
	}
	err = db.QueryRowContext(ctx, `SELECT occurred_at FROM coupon_outbox WHERE id = ?`, first.Int64).Scan(&oldest)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil // published meanwhile
	}
	return last.Int64 - first.Int64 + 1, oldest, wrap("measure outbox", err)
}
