package webhook

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/participant"
)

// SecretPrefix starts every endpoint secret.
const SecretPrefix = "whsec_"

// maxErrorLen is the width of webhook_delivery.error; maxReasonLen of
// webhook_endpoint.disabled_reason.
const (
	maxErrorLen  = 1024
	maxReasonLen = 255
)

// StoreConfig configures a Store.
type StoreConfig struct {
	// AllowHTTP accepts plain http URLs to any host, not only to loopback
	// ones. For development and private networks only.
	AllowHTTP bool
	// Now is the clock of the records, and the dispatcher's (signature
	// timestamps, the retry horizon); time.Now when nil.
	Now func() time.Time
}

// Store keeps webhook endpoints and their delivery attempts in the main
// database (tables webhook_endpoint and webhook_delivery,
// sql/main/0006_webhooks.sql).
type Store struct {
	db  *sql.DB
	cfg StoreConfig
}

// NewStore returns a Store over the main database.
func NewStore(db *sql.DB, cfg StoreConfig) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{db: db, cfg: cfg}
}

func (s *Store) now() time.Time { return s.cfg.Now().UTC() }

// target is an endpoint with its secret: what the dispatcher needs.
type target struct {
	Endpoint
	secret string
}

// Failures is an endpoint's current run of failed attempts.
type Failures struct {
	Consecutive int
	Since       time.Time
}

// CreateEndpoint registers an ENABLED endpoint for url receiving the events
// of types (every type when empty), and returns it with its signing
// secret. The secret is returned only here.
func (s *Store) CreateEndpoint(ctx context.Context, url string, types []string, actor string) (Endpoint, string, error) {
	if err := validateURL(url, s.cfg.AllowHTTP); err != nil {
		return Endpoint{}, "", err
	}
	types, err := normalizeTypes(types)
	if err != nil {
		return Endpoint{}, "", err
	}
	if err := validateActor(actor); err != nil {
		return Endpoint{}, "", err
	}
	secret, err := newSecret()
	if err != nil {
		return Endpoint{}, "", err
	}
	now := s.now()
	res, err := s.db.ExecContext(ctx, `INSERT INTO webhook_endpoint
		(url, event_types, secret, status, created_by, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		url, strings.Join(types, ","), secret, StatusEnabled, actor, now, now)
	if err != nil {
		return Endpoint{}, "", wrap("create webhook endpoint", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return Endpoint{}, "", wrap("create webhook endpoint", err)
	}
	ep, err := s.GetEndpoint(ctx, id)
	return ep, secret, err
}

// newSecret returns "whsec_" and 32 random bytes in unpadded base64url.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate webhook secret: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

const endpointColumns = `id, url, event_types, secret, status, consecutive_failures,
	failing_since, disabled_reason, created_by, created_at, updated_at`

func scanEndpoint(row interface{ Scan(...any) error }) (target, error) {
	var t target
	var types string
	var since sql.NullTime
	err := row.Scan(&t.ID, &t.URL, &types, &t.secret, &t.Status, &t.ConsecutiveFailures,
		&since, &t.DisabledReason, &t.CreatedBy, &t.CreatedAt, &t.UpdatedAt)
	if types != "" {
		t.EventTypes = strings.Split(types, ",")
	}
	if since.Valid {
		t.FailingSince = since.Time
	}
	return t, err
}

// GetEndpoint returns endpoint id.
func (s *Store) GetEndpoint(ctx context.Context, id int64) (Endpoint, error) {
	t, err := s.target(ctx, id)
	return t.Endpoint, err
}

func (s *Store) target(ctx context.Context, id int64) (target, error) {
	t, err := scanEndpoint(s.db.QueryRowContext(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoint WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return target{}, endpointNotFound(id)
	}
	return t, wrap("get webhook endpoint", err)
}

func endpointNotFound(id int64) error {
	return participant.Errorf(participant.ENOTFOUND, ReasonEndpointNotFound, "webhook endpoint %d not found", id)
}

// ListEndpoints returns every endpoint, oldest first. There are few: each
// is registered by an admin.
func (s *Store) ListEndpoints(ctx context.Context) ([]Endpoint, error) {
	ts, err := s.targets(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Endpoint, len(ts))
	for i, t := range ts {
		out[i] = t.Endpoint
	}
	return out, nil
}

func (s *Store) targets(ctx context.Context) ([]target, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoint ORDER BY id`)
	if err != nil {
		return nil, wrap("list webhook endpoints", err)
	}
	defer rows.Close()
	var out []target
	for rows.Next() {
		t, err := scanEndpoint(rows)
		if err != nil {
			return nil, wrap("list webhook endpoints", err)
		}
		out = append(out, t)
	}
	return out, wrap("list webhook endpoints", rows.Err())
}

// SetEnabled enables or disables endpoint id and returns it. Enabling
// clears the run of failures and the reason; disabling records reason.
// Dispatchers stop or start its consumer at their next refresh.
func (s *Store) SetEnabled(ctx context.Context, id int64, enabled bool, reason string) (Endpoint, error) {
	var err error
	if enabled {
		_, err = s.db.ExecContext(ctx, `UPDATE webhook_endpoint SET status = ?, consecutive_failures = 0,
			failing_since = NULL, disabled_reason = '', updated_at = ? WHERE id = ?`, StatusEnabled, s.now(), id)
	} else {
		_, err = s.db.ExecContext(ctx, `UPDATE webhook_endpoint SET status = ?, disabled_reason = ?, updated_at = ?
			WHERE id = ?`, StatusDisabled, truncate(reason, maxReasonLen), s.now(), id)
	}
	if err != nil {
		return Endpoint{}, wrap("set webhook endpoint status", err)
	}
	return s.GetEndpoint(ctx, id)
}

// disable sets an ENABLED endpoint DISABLED with reason. It reports whether
// it changed the endpoint, so that of several dispatchers failing at once
// only one counts the disabling, and the time it wrote as updated_at.
func (s *Store) disable(ctx context.Context, id int64, reason string) (bool, time.Time, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `UPDATE webhook_endpoint SET status = ?, disabled_reason = ?, updated_at = ?
		WHERE id = ? AND status = ?`, StatusDisabled, truncate(reason, maxReasonLen), now, id, StatusEnabled)
	if err != nil {
		return false, time.Time{}, wrap("disable webhook endpoint", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, time.Time{}, wrap("disable webhook endpoint", err)
	}
	return n == 1, now, nil
}

// DeleteEndpoint removes endpoint id. Its deliveries stay as history; the
// dispatchers delete its consumer at their next refresh.
func (s *Store) DeleteEndpoint(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM webhook_endpoint WHERE id = ?`, id)
	if err != nil {
		return wrap("delete webhook endpoint", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap("delete webhook endpoint", err)
	}
	if n == 0 {
		return endpointNotFound(id)
	}
	return nil
}

const deliveryColumns = `id, endpoint_id, event_id, event_type, stream_seq, attempt, manual,
	status_code, latency_ms, error, delivered, gave_up, created_at`

func scanDelivery(row interface{ Scan(...any) error }) (Delivery, error) {
	var d Delivery
	var ms int64
	err := row.Scan(&d.ID, &d.EndpointID, &d.EventID, &d.EventType, &d.StreamSeq, &d.Attempt, &d.Manual,
		&d.StatusCode, &ms, &d.Error, &d.Delivered, &d.GaveUp, &d.CreatedAt)
	d.Latency = time.Duration(ms) * time.Millisecond
	return d, err
}

// ListDeliveries returns a page of endpoint id's delivery attempts, newest
// first. The next page is Page{Before: the last one's ID}.
func (s *Store) ListDeliveries(ctx context.Context, endpointID int64, page Page) ([]Delivery, error) {
	switch {
	case page.Limit < 0 || page.Limit > 500:
		return nil, participant.Invalid("limit", "must be between 0 and 500")
	case page.Limit == 0:
		page.Limit = 50
	}
	if page.Before <= 0 {
		page.Before = 1<<63 - 1
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM webhook_delivery
		WHERE endpoint_id = ? AND id < ? ORDER BY id DESC LIMIT ?`, endpointID, page.Before, page.Limit)
	if err != nil {
		return nil, wrap("list webhook deliveries", err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, wrap("list webhook deliveries", err)
		}
		out = append(out, d)
	}
	return out, wrap("list webhook deliveries", rows.Err())
}

// RecordDelivery writes one attempt (setting its CreatedAt when zero) and
// updates the endpoint's run of failures in the same transaction: a
// delivered attempt ends the run, a failed one extends it. Manual attempts
// leave the run alone. It returns the run after the attempt.
func (s *Store) RecordDelivery(ctx context.Context, d Delivery) (Failures, error) {
	if d.CreatedAt.IsZero() {
		d.CreatedAt = s.now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Failures{}, wrap("record webhook delivery", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_delivery
		(endpoint_id, event_id, event_type, stream_seq, attempt, manual, status_code, latency_ms, error, delivered, gave_up, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.EndpointID, d.EventID, d.EventType, d.StreamSeq, d.Attempt, d.Manual, d.StatusCode,
		d.Latency.Milliseconds(), truncate(d.Error, maxErrorLen), d.Delivered, d.GaveUp, d.CreatedAt); err != nil {
		return Failures{}, wrap("record webhook delivery", err)
	}
	switch {
	case d.Manual:
	case d.Delivered:
		// Written only when a run ends, so that a healthy endpoint's
		// deliveries do not all update its row.
		_, err = tx.ExecContext(ctx, `UPDATE webhook_endpoint SET consecutive_failures = 0, failing_since = NULL
			WHERE id = ? AND (consecutive_failures <> 0 OR failing_since IS NOT NULL)`, d.EndpointID)
	default:
		_, err = tx.ExecContext(ctx, `UPDATE webhook_endpoint SET consecutive_failures = consecutive_failures + 1,
			failing_since = COALESCE(failing_since, ?) WHERE id = ?`, d.CreatedAt, d.EndpointID)
	}
	if err != nil {
		return Failures{}, wrap("record webhook delivery", err)
	}
	var f Failures
	var since sql.NullTime
	err = tx.QueryRowContext(ctx, `SELECT consecutive_failures, failing_since FROM webhook_endpoint WHERE id = ?`,
		d.EndpointID).Scan(&f.Consecutive, &since)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Deleted meanwhile: the attempt is still history.
	case err != nil:
		return Failures{}, wrap("record webhook delivery", err)
	}
	if since.Valid {
		f.Since = since.Time
	}
	return f, wrap("record webhook delivery", tx.Commit())
}

// firstAttempt returns when the first automatic attempt at event eventID
// was made for endpoint endpointID; ok is false when none was.
func (s *Store) firstAttempt(ctx context.Context, endpointID int64, eventID string) (t time.Time, ok bool, err error) {
	var first sql.NullTime
	err = s.db.QueryRowContext(ctx, `SELECT MIN(created_at) FROM webhook_delivery
		WHERE event_id = ? AND endpoint_id = ? AND manual = 0`, eventID, endpointID).Scan(&first)
	if err != nil {
		return time.Time{}, false, wrap("find first webhook attempt", err)
	}
	return first.Time, first.Valid, nil
}

// lastAttempt returns the latest attempt at event eventID for any endpoint,
// preferring endpointID's: its stream sequence locates the event.
func (s *Store) lastAttempt(ctx context.Context, endpointID int64, eventID string) (Delivery, error) {
	d, err := scanDelivery(s.db.QueryRowContext(ctx, `SELECT `+deliveryColumns+` FROM webhook_delivery
		WHERE event_id = ? ORDER BY endpoint_id = ? DESC, id DESC LIMIT 1`, eventID, endpointID))
	if errors.Is(err, sql.ErrNoRows) {
		return Delivery{}, participant.Errorf(participant.ENOTFOUND, ReasonEventNotFound,
			"event %s was never delivered, so its place in the stream is unknown", eventID)
	}
	return d, wrap("find webhook attempt", err)
}

// attempts counts endpointID's automatic attempts at eventID.
func (s *Store) attempts(ctx context.Context, endpointID int64, eventID string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM webhook_delivery WHERE event_id = ? AND endpoint_id = ?`,
		eventID, endpointID).Scan(&n)
	return n, wrap("count webhook attempts", err)
}

// wrap says what failed, marking the transient errors (a cancelled or
// timed-out context, a lost connection) unavailable.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	var pe *participant.Error
	switch {
	case errors.As(err, &pe):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, sql.ErrConnDone), errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrInvalidConn):
		return participant.Unavailable(what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// PruneDeliveries deletes the attempts recorded before before, from the
// oldest, at most batch at a time, and returns how many it deleted. It
// reads and deletes by primary key only: the oldest batch ids, and of them
// those older than before. Attempts are recorded in id order, near enough
// (replicas' clocks differ a little), so it stops at the first batch that
// holds nothing old: a young row among old ones waits for a later round.
// The retry horizon and the attempt numbers read these records, so before
// must lie past the horizon (Config.Check's caller sees to it).
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, batch int) (int64, error) {
	if batch <= 0 {
		batch = 1000
	}
	var total int64
	for ctx.Err() == nil {
		var first sql.NullInt64
		if err := s.db.QueryRowContext(ctx, `SELECT MIN(id) FROM webhook_delivery`).Scan(&first); err != nil {
			return total, wrap("prune webhook deliveries", err)
		}
		if !first.Valid {
			return total, nil
		}
		res, err := s.db.ExecContext(ctx, `DELETE FROM webhook_delivery WHERE id >= ? AND id < ? AND created_at < ?`,
			first.Int64, first.Int64+int64(batch), before.UTC())
		if err != nil {
			return total, wrap("prune webhook deliveries", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, wrap("prune webhook deliveries", err)
		}
		total += n
		if n == 0 {
			return total, nil
		}
	}
	return total, ctx.Err()
}
