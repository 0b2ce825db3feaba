// Package relay publishes the coupon service's lifecycle events from the
// transactional outbox (participant/mysql's coupon_outbox tables, one per
// database) to NATS JetStream, at least once and in order per coupon, and
// deletes what JetStream has stored.
//
// Every replica runs a relay; each outbox is drained by the replica that
// holds its lease (jobs.Job), so the outboxes are divided among the
// replicas and one that dies hands its outboxes over within the lease's
// TTL. A relay killed at any point loses nothing: a row is deleted only
// after JetStream acknowledged storing it. It may publish a row again (a
// kill between the acknowledgement and the delete, or two holders during a
// handover); the event ID is the message ID, so JetStream drops a resend
// within its duplicate window and consumers deduplicate by event ID after
// it.
//
// Order per coupon: rows are read in row order, which for one coupon is
// the order of its events (each change writes them under the coupon's row
// lock). Publishing is asynchronous but in waves — the first pending event
// of every coupon, then the second, ... — and a wave with a failure ends
// the batch, so a later event of a coupon is never stored before an
// earlier one that failed.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/opencoupon/coupon/internal/jobs"
	"github.com/opencoupon/coupon/participant/mysql"
)

// Outbox is where events wait: numbered sources (databases), each read in
// row order.
type Outbox interface {
	Sources() []string
	// Pending reads the events of the oldest rows, at most rows of them.
	// A row it cannot read ends them with a *mysql.BadRowError.
	Pending(ctx context.Context, src, rows int) ([]mysql.OutboxEvent, error)
	Delete(ctx context.Context, src int, rows []int64) error
	// SetAside moves a row that cannot be read out of the outbox, kept
	// for an operator.
	SetAside(ctx context.Context, src int, row int64, reason string) error
	Backlog(ctx context.Context, src int) (n int64, oldest time.Time, err error)
}

// Config configures a relay; zero fields take the defaults below.
type Config struct {
	// URL of NATS, e.g. nats://127.0.0.1:4222.
	URL string
	// Stream is the JetStream stream, created (or updated) with subjects
	// SubjectPrefix + ">" when missing.
	Stream        string
	SubjectPrefix string
	// Batch is about the most events read and published at once: whole
	// rows, as many as Batch events fill at the size of the rows read
	// last.
	Batch int
	// Poll is how often an idle outbox is looked at.
	Poll time.Duration
	// DuplicateWindow is the stream's duplicate window: resends within it
	// are dropped by JetStream.
	DuplicateWindow time.Duration
	// MaxAge is how long the stream keeps events.
	MaxAge time.Duration
	// LeaseTTL: a dead holder's outboxes are taken over within it.
	LeaseTTL time.Duration
	// AckTimeout bounds the wait for JetStream's acknowledgements.
	AckTimeout time.Duration
}

// Defaults.
const (
	DefaultStream        = "COUPON_EVENTS"
	DefaultSubjectPrefix = "coupon.events."
)

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.Batch <= 0 {
		c.Batch = 1000
	}
	if c.Poll <= 0 {
		c.Poll = 50 * time.Millisecond
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
}

// Relay drains outboxes into JetStream.
type Relay struct {
	cfg    Config
	outbox Outbox
	locker jobs.Locker
	log    *slog.Logger
	m      *metrics

	connMu sync.Mutex
	conn   *conn
	closed bool

	sizeMu  sync.Mutex
	rowSize map[int]float64 // events per row in each outbox's last read

	measuredMu sync.Mutex
	measured   map[int]time.Time // when each outbox's backlog was last measured

	streamMu sync.Mutex
	streamOK bool
}

// New returns a relay; Run runs it. It connects to NATS on its first
// round, and again on any round after a connection attempt failed: a NATS
// that is down delays events, never the service.
func New(cfg Config, outbox Outbox, locker jobs.Locker, log *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	cfg.defaults()
	if cfg.URL == "" {
		return nil, errors.New("relay: no NATS URL")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{cfg: cfg, outbox: outbox, locker: locker, log: log, m: newMetrics(reg)}, nil
}

// conn is the relay's connection to NATS.
type conn struct {
	nc   *nats.Conn
	js   jetstream.JetStream // for the stream's configuration
	acks *acks
}

// connect returns the relay's connection, connecting first (Dial) if
// none is open.
func (r *Relay) connect() (*conn, error) {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	if r.closed {
		return nil, nats.ErrConnectionClosed
	}
	if r.conn != nil {
		return r.conn, nil
	}
	// No reconnect buffer (Dial): a publish while disconnected fails at
	// once and its row stays in the outbox, rather than waiting in memory.
	nc, err := Dial(r.cfg.URL, "coupon-relay", r.log)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	a, err := newAcks(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	r.conn = &conn{nc: nc, js: js, acks: a}
	return r.conn, nil
}

// Dial connects to NATS as the service's connections do (the relay's and
// the webhook dispatcher's): synchronously, bounded by a 2 s timeout, for
// the caller to call again later when NATS is down; once connected,
// nats.go reconnects by itself forever. Its own retry of a failed first
// connection (RetryOnFailedConnect) was seen to stop retrying after one
// failure and leave the connection reconnecting for good, so it is not
// used. There is no reconnect buffer: what is sent while disconnected
// fails at once instead of waiting in memory.
func Dial(url, name string, log *slog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name(name),
		nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond), nats.Timeout(2*time.Second),
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "connection", name, "err", err) }),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected", "connection", name) }))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	return nc, nil
}

// Close closes the NATS connection.
func (r *Relay) Close() {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	r.closed = true
	if r.conn != nil {
		r.conn.nc.Close()
	}
}

// Run drains every outbox whose lease this replica holds, until ctx ends.
func (r *Relay) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for src, name := range r.outbox.Sources() {
		r.m.published.WithLabelValues(name)
		r.m.errors.WithLabelValues(name)
		r.m.setAside.WithLabelValues(name)
		b := &backoff{}
		j := &jobs.Job{
			Name: "event relay " + name, Schedule: jobs.Every(r.cfg.Poll), Locker: r.locker,
			Lease: "job:event-relay:" + name, TTL: r.cfg.LeaseTTL, Log: r.log,
			Round: func(ctx context.Context) error {
				if time.Now().Before(b.until) {
					return nil
				}
				_, err := r.Drain(ctx, src)
				if err != nil && ctx.Err() == nil {
					b.fail()
					if b.streak == 1 || b.streak%20 == 0 {
						r.log.WarnContext(ctx, "event relay cannot publish; events wait in the outbox", "outbox", name,
							"failures", b.streak, "retry_in", b.delay.String(), "err", err)
					}
				} else if err == nil && b.streak > 0 {
					r.log.InfoContext(ctx, "event relay publishing again", "outbox", name, "after_failures", b.streak)
					*b = backoff{}
				}
				return nil
			},
		}
		wg.Go(func() { j.Run(ctx) })
	}
	wg.Wait()
}

// backoff spaces a failing outbox's retries: 100 ms doubling to 5 s.
type backoff struct {
	streak int
	delay  time.Duration
	until  time.Time
}

func (b *backoff) fail() {
	b.streak++
	b.delay = min(max(2*b.delay, 100*time.Millisecond), 5*time.Second)
	b.until = time.Now().Add(b.delay)
}

// Drain publishes outbox src until it is empty (or a publish fails) and
// returns how many events it published.
func (r *Relay) Drain(ctx context.Context, src int) (int, error) {
	name := r.outbox.Sources()[src]
	defer r.measure(ctx, src, name)
	c, err := r.connect()
	if err != nil {
		r.m.errors.WithLabelValues(name).Inc()
		return 0, err
	}
	if err := r.ensureStream(ctx, c.js); err != nil {
		r.m.errors.WithLabelValues(name).Inc()
		return 0, err
	}
	total := 0
	for ctx.Err() == nil {
		rows := r.rowsToRead(src)
		evs, err := r.outbox.Pending(ctx, src, rows)
		var bad *mysql.BadRowError
		switch {
		case errors.As(err, &bad) && len(evs) == 0:
			if err := r.setAside(ctx, src, name, bad); err != nil {
				return total, err
			}
			continue
		case bad != nil:
			// The rows before it first; it is the first row next time.
		case err != nil:
			return total, err
		case len(evs) == 0:
			return total, nil
		}
		read := r.sawRows(src, evs)
		evs = wholeRowsUpTo(evs, r.cfg.Batch)
		done, n, perr := r.publish(ctx, c, evs)
		if perr != nil {
			r.forgetStream() // it may have been deleted: make it again next time
		}
		if err := r.outbox.Delete(ctx, src, done); err != nil {
			return total, err
		}
		total += n
		r.m.published.WithLabelValues(name).Add(float64(n))
		if perr != nil {
			r.m.errors.WithLabelValues(name).Inc()
			return total, perr
		}
		if read < rows {
			return total, nil
		}
	}
	return total, ctx.Err()
}

// setAside moves a row that cannot be read out of the outbox: one row
// written corrupted (or by hand) must not hold back every event after it
// for good. Its events are lost to the stream; the row is kept in
// coupon_outbox_set_aside, logged and counted (alert
// CouponEventRowSetAside), and the events of its coupons after it may
// reach consumers with a gap in their sequence numbers.
func (r *Relay) setAside(ctx context.Context, src int, name string, bad *mysql.BadRowError) error {
	if err := r.outbox.SetAside(ctx, src, bad.Row, bad.Err.Error()); err != nil {
		return err
	}
	r.m.setAside.WithLabelValues(name).Inc()
	r.log.ErrorContext(ctx, "event relay set aside an outbox row it cannot read; its events are not published",
		"outbox", name, "row", bad.Row, "err", bad.Err)
	return nil
}

// rowsToRead is how many rows of outbox src make about Batch events, at
// the size of the rows read last.
func (r *Relay) rowsToRead(src int) int {
	r.sizeMu.Lock()
	defer r.sizeMu.Unlock()
	per := r.rowSize[src]
	if per < 1 {
		per = 1
	}
	return min(max(1, int(float64(r.cfg.Batch)/per)), max(1, r.cfg.Batch/8))
}

// wholeRowsUpTo keeps the rows of evs (in order) until they hold limit
// events, so that rows larger than the last read's do not overfill a
// batch; the rest are read again next time.
func wholeRowsUpTo(evs []mysql.OutboxEvent, limit int) []mysql.OutboxEvent {
	for i := 1; i < len(evs); i++ {
		if i >= limit && evs[i].Row != evs[i-1].Row {
			return evs[:i]
		}
	}
	return evs
}

// sawRows notes the size of the rows evs came from and returns how many
// there were.
func (r *Relay) sawRows(src int, evs []mysql.OutboxEvent) int {
	rows := 1
	for i := 1; i < len(evs); i++ {
		if evs[i].Row != evs[i-1].Row {
			rows++
		}
	}
	r.sizeMu.Lock()
	defer r.sizeMu.Unlock()
	if r.rowSize == nil {
		r.rowSize = map[int]float64{}
	}
	r.rowSize[src] = float64(len(evs)) / float64(rows)
	return rows
}

// publish sends evs in waves and returns the rows whose events JetStream
// all acknowledged (stored, or dropped as duplicates of what it stored),
// and how many events it acknowledged.
func (r *Relay) publish(ctx context.Context, c *conn, evs []mysql.OutboxEvent) ([]int64, int, error) {
	acked := make([]bool, len(evs))
	n, err := r.publishWaves(ctx, c.nc, c.acks, evs, acked)
	var done []int64
	for i := 0; i < len(evs); {
		row, all := evs[i].Row, true
		for ; i < len(evs) && evs[i].Row == row; i++ {
			all = all && acked[i]
		}
		if all {
			done = append(done, row)
		}
	}
	return done, n, err
}

func (r *Relay) publishWaves(ctx context.Context, nc *nats.Conn, a *acks, evs []mysql.OutboxEvent, acked []bool) (int, error) {
	n := 0
	for _, wv := range waves(evs) {
		w := a.start(len(wv))
		sent := 0
		var err error
		for k, i := range wv {
			if err = nc.PublishMsg(r.message(evs[i], w.prefix+strconv.Itoa(k))); err != nil {
				err = fmt.Errorf("publish %s: %w", evs[i].EventID, err)
				break
			}
			sent++
		}
		a.sent(w, sent)
		var werr error
		if err == nil {
			// After a failed publish (the connection is down) what was
			// answered counts and the rest is published again later.
			werr = a.wait(ctx, w, r.cfg.AckTimeout)
		}
		ok, aerr := a.end(w)
		for k, yes := range ok {
			if yes {
				acked[wv[k]] = true
				n++
			}
		}
		if err = errors.Join(err, werr, aerr); err != nil {
			return n, err
		}
	}
	return n, nil
}

// waves splits evs (in row order) into waves to publish one after the
// other: wave k holds the k-th event of every coupon (and template), so
// that no event is sent before its predecessor was acknowledged.
func waves(evs []mysql.OutboxEvent) [][]int {
	var out [][]int
	seen := make(map[orderKey]int, len(evs))
	for i, e := range evs {
		k := keyOf(e)
		w := seen[k]
		seen[k] = w + 1
		if w == len(out) {
			out = append(out, nil)
		}
		out[w] = append(out[w], i)
	}
	return out
}

// orderKey groups the events whose order must hold: a coupon's (coupon
// set), a template's (coupon 0).
type orderKey struct{ coupon, template int64 }

func keyOf(e mysql.OutboxEvent) orderKey {
	if e.CouponID != 0 {
		return orderKey{coupon: e.CouponID}
	}
	return orderKey{template: e.TemplateID}
}

// message is the JetStream message of e: its published form (as the
// outbox keeps it) on subject SubjectPrefix + type, its ID the message ID.
func (r *Relay) message(e mysql.OutboxEvent, reply string) *nats.Msg {
	return &nats.Msg{Subject: r.cfg.SubjectPrefix + e.Type, Reply: reply, Data: e.Data,
		Header: nats.Header{jetstream.MsgIDHeader: []string{e.EventID}}}
}

// ensureStream creates the stream, or updates it to this configuration,
// once per relay.
func (r *Relay) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	r.streamMu.Lock()
	defer r.streamMu.Unlock()
	if r.streamOK {
		return nil
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: r.cfg.Stream, Subjects: []string{r.cfg.SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Duplicates: r.cfg.DuplicateWindow, MaxAge: r.cfg.MaxAge,
	})
	if err != nil {
		return fmt.Errorf("relay: stream %s: %w", r.cfg.Stream, err)
	}
	r.streamOK = true
	return nil
}

func (r *Relay) forgetStream() {
	r.streamMu.Lock()
	r.streamOK = false
	r.streamMu.Unlock()
}

// measureEvery bounds how often an outbox's backlog is measured: a round
// runs every poll interval, and the gauges need not.
const measureEvery = time.Second

// measure updates the backlog gauges of src, at most once a measureEvery.
func (r *Relay) measure(ctx context.Context, src int, name string) {
	r.measuredMu.Lock()
	if r.measured == nil {
		r.measured = map[int]time.Time{}
	}
	if time.Since(r.measured[src]) < measureEvery {
		r.measuredMu.Unlock()
		return
	}
	r.measured[src] = time.Now()
	r.measuredMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	n, oldest, err := r.outbox.Backlog(ctx, src)
	if err != nil {
		return
	}
	r.m.backlog.WithLabelValues(name).Set(float64(n))
	lag := 0.0
	if !oldest.IsZero() {
		lag = max(0, time.Since(oldest).Seconds())
	}
	r.m.lag.WithLabelValues(name).Set(lag)
}

type metrics struct {
	published *prometheus.CounterVec
	errors    *prometheus.CounterVec
	setAside  *prometheus.CounterVec
	backlog   *prometheus.GaugeVec
	lag       *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coupon_events_published_total",
			Help: "Events the relay published to JetStream (acknowledged), by outbox."}, []string{"outbox"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coupon_events_relay_errors_total",
			Help: "Relay rounds that stopped on an error (NATS down, no acknowledgement), by outbox."}, []string{"outbox"}),
		setAside: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coupon_events_set_aside_total",
			Help: "Outbox rows the relay could not read as events and moved to coupon_outbox_set_aside, unpublished, by outbox."}, []string{"outbox"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "coupon_events_outbox_rows",
			Help: "Rows waiting in the outbox (a row holds one transaction's events), as the relay holding it last measured, by outbox."}, []string{"outbox"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "coupon_events_relay_lag_seconds",
			Help: "Age of the oldest unpublished event, as the relay holding the outbox last measured, by outbox."}, []string{"outbox"}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.errors, m.setAside, m.backlog, m.lag)
	}
	return m
}
