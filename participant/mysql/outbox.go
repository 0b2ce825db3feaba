package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/opencoupon/coupon/participant"
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

// EncodeEvents is the outbox row form of evs: each event's published form
// (couponeventsv1.Event), in order, as the repeated field 1 of a protobuf
// message, so that a row is a valid protobuf and each event is kept
// byte for byte as it will be published. The messages are written field
// by field (appendEvent) rather than through proto.Marshal: a claim batch
// encodes one per coupon, on the claim path. A field added to the Event
// message must be added to appendEvent and decodeEvent too;
// TestOutboxRowRoundTrip checks both against the generated code.
func EncodeEvents(evs []OutboxEvent) []byte {
	b := make([]byte, 0, 128*len(evs))
	var m []byte
	for _, e := range evs {
		m = appendEvent(m[:0], e)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b
}

// The field numbers of couponeventsv1.Event and of its timestamp.
const (
	fID = iota + 1
	fType
	fSchemaVersion
	fOccurredAt
	fCouponCode
	fCouponID
	fUserID
	fTemplateID
	fSequence
	fOrderNo
	fGID
	fBranchID
	fDiscountAmount
	fRequestID
	fTemplateVersion
	fStockAdded

	fSeconds = 1
	fNanos   = 2
)

// appendEvent appends e's couponeventsv1.Event encoding: proto3's, each
// field in number order and left out when zero.
func appendEvent(b []byte, e OutboxEvent) []byte {
	str := func(num protowire.Number, v string) {
		if v != "" {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, v)
		}
	}
	i64 := func(num protowire.Number, v int64) {
		if v != 0 {
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		}
	}
	str(fID, e.EventID)
	str(fType, e.Type)
	i64(fSchemaVersion, 1)
	var ts []byte
	if sec := e.OccurredAt.Unix(); sec != 0 {
		ts = protowire.AppendTag(ts, fSeconds, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(sec))
	}
	if ns := e.OccurredAt.Nanosecond(); ns != 0 {
		ts = protowire.AppendTag(ts, fNanos, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(ns))
	}
	b = protowire.AppendTag(b, fOccurredAt, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	str(fCouponCode, e.CouponCode)
	i64(fCouponID, e.CouponID)
	i64(fUserID, e.UserID)
	i64(fTemplateID, e.TemplateID)
	i64(fSequence, e.Seq)
	str(fOrderNo, e.OrderNo)
	str(fGID, e.GID)
	str(fBranchID, e.BranchID)
	i64(fDiscountAmount, e.DiscountAmount)
	str(fRequestID, e.RequestID)
	i64(fTemplateVersion, e.TemplateVersion)
	i64(fStockAdded, e.StockAdded)
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
		e, err := decodeEvent(data)
		if err != nil {
			return out, fmt.Errorf("outbox row %d: %w", row, err)
		}
		e.Row, e.Data = row, data
		out = append(out, e)
	}
	return out, nil
}

// decodeEvent reads one couponeventsv1.Event; fields it does not know are
// skipped, as protobuf readers do.
func decodeEvent(b []byte) (OutboxEvent, error) {
	var e OutboxEvent
	var sec, nanos int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return e, errors.New("bad event")
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return e, errors.New("bad event")
			}
			b = b[n:]
			switch num {
			case fCouponID:
				e.CouponID = int64(v)
			case fUserID:
				e.UserID = int64(v)
			case fTemplateID:
				e.TemplateID = int64(v)
			case fSequence:
				e.Seq = int64(v)
			case fDiscountAmount:
				e.DiscountAmount = int64(v)
			case fTemplateVersion:
				e.TemplateVersion = int64(v)
			case fStockAdded:
				e.StockAdded = int64(v)
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return e, errors.New("bad event")
			}
			b = b[n:]
			switch num {
			case fID:
				e.EventID = string(v)
			case fType:
				e.Type = string(v)
			case fOccurredAt:
				var err error
				if sec, nanos, err = decodeTimestamp(v); err != nil {
					return e, err
				}
			case fCouponCode:
				e.CouponCode = string(v)
			case fOrderNo:
				e.OrderNo = string(v)
			case fGID:
				e.GID = string(v)
			case fBranchID:
				e.BranchID = string(v)
			case fRequestID:
				e.RequestID = string(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return e, errors.New("bad event")
			}
			b = b[n:]
		}
	}
	e.OccurredAt = time.Unix(sec, nanos).UTC()
	return e, nil
}

func decodeTimestamp(b []byte) (sec, nanos int64, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, errors.New("bad timestamp")
		}
		b = b[n:]
		if typ != protowire.VarintType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, 0, errors.New("bad timestamp")
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return 0, 0, errors.New("bad timestamp")
		}
		b = b[n:]
		switch num {
		case fSeconds:
			sec = int64(v)
		case fNanos:
			nanos = int64(int32(v))
		}
	}
	return sec, nanos, nil
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

// Pending reads the events of the oldest rows (at most rows of them) of
// outbox src, in order.
func (s *Outbox) Pending(ctx context.Context, src, rows int) ([]OutboxEvent, error) {
	db, err := s.db(src)
	if err != nil {
		return nil, err
	}
	rs, err := db.QueryContext(ctx, `SELECT id, events FROM coupon_outbox ORDER BY id LIMIT ?`, max(1, rows))
	if err != nil {
		return nil, wrap("read outbox", err)
	}
	defer rs.Close()
	var out []OutboxEvent
	for rs.Next() {
		var id int64
		var b []byte
		if err := rs.Scan(&id, &b); err != nil {
			return nil, wrap("read outbox", err)
		}
		n := len(out)
		if out, err = decodeEvents(id, b, out); err != nil {
			return out[:n], &BadRowError{Row: id, Err: err}
		}
	}
	return out, wrap("read outbox", rs.Err())
}

// BadRowError is Pending's answer when a row cannot be read as events
// (written corrupted, or by hand): the events before it come with it, and
// SetAside moves the row out of the way.
type BadRowError struct {
	Row int64
	Err error // names the row
}

func (e *BadRowError) Error() string { return e.Err.Error() }
func (e *BadRowError) Unwrap() error { return e.Err }

// SetAside moves row of outbox src into coupon_outbox_set_aside, with
// reason, in one transaction: the row is kept for an operator and no
// longer holds back the rows after it.
func (s *Outbox) SetAside(ctx context.Context, src int, row int64, reason string) error {
	db, err := s.db(src)
	if err != nil {
		return err
	}
	if len(reason) > 255 {
		reason = reason[:255]
	}
	return wrap("set an outbox row aside", s.inTx(ctx, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO coupon_outbox_set_aside (id, events, n, occurred_at, reason, set_aside_at)
 SELECT id, events, n, occurred_at, ?, ? FROM coupon_outbox WHERE id = ?`, reason, time.Now().UTC(), row); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM coupon_outbox WHERE id = ?`, row)
		return err
	}))
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
