package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/opencoupon/coupon/participant"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
)

const (
	// maxDrain bounds how much of a response body is read (and discarded)
	// so that the connection can be reused; a longer body closes it.
	maxDrain = 64 << 10
	// maxErrorBody is how much of a failed response's body is kept in the
	// attempt's error text.
	maxErrorBody = 256
	// settleTimeout bounds acknowledging and recording an attempt, which
	// outlive the cancellation of the consumer that made it.
	settleTimeout = 10 * time.Second
	// consumerPrefix names the durable consumers: consumerPrefix + id.
	consumerPrefix = "webhook-"
	userAgent      = "opencoupon-webhook/1"
)

// Config configures a Dispatcher. Zero fields take the defaults below,
// which are set in one place, withDefaults.
type Config struct {
	// Stream is the JetStream stream of the events. "COUPON_EVENTS".
	Stream string
	// HTTPClient sends the requests; nil means a client with its own
	// transport. Redirects are never followed, whatever its CheckRedirect:
	// a 3xx is a failed attempt.
	HTTPClient *http.Client
	// Timeout bounds one attempt, from dialing to reading the status. 10s.
	Timeout time.Duration
	// AckWait is how long JetStream waits for an attempt's outcome before
	// it hands the event out again (to this or another replica). It must
	// exceed Timeout. 30s.
	AckWait time.Duration
	// MaxInFlight is how many of one endpoint's events may be in delivery
	// or waiting for a retry at once. With 1, the default, an endpoint
	// receives its events one at a time in stream order, and an event that
	// keeps failing holds back the ones after it until it is delivered or
	// given up. More trades that order for throughput, and makes an outage
	// reach DisableAfter sooner (every event in flight counts a failure).
	MaxInFlight int
	// InitialBackoff is the wait after an event's first failed attempt;
	// each further failure doubles it, up to MaxBackoff. 1s and 1h.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// Horizon is how long an event is retried, from its first attempt at an
	// endpoint; the first failed attempt past it gives the event up
	// (terminates it in JetStream). 24h.
	Horizon time.Duration
	// DisableAfter consecutive failed attempts at an endpoint, whichever
	// events they were for, disable it. 20.
	DisableAfter int
	// FailingFor: an endpoint whose attempts have all failed for this long
	// is disabled at its next failed attempt. 24h.
	FailingFor time.Duration
	// RefreshInterval is how often the endpoint table is read again to
	// start and stop consumers. 5s.
	RefreshInterval time.Duration
	// Retention is how long delivery attempts are kept (Store.
	// PruneDeliveries); it must exceed Horizon, whose retries read them.
	// 30 days.
	Retention time.Duration
}

// Defaults of the Config fields an operator sets (the coupon command's
// webhooks.* keys).
const (
	DefaultTimeout         = 10 * time.Second
	DefaultMaxBackoff      = time.Hour
	DefaultHorizon         = 24 * time.Hour
	DefaultDisableAfter    = 20
	DefaultRefreshInterval = 5 * time.Second
	// DefaultRetention is how long delivery attempts are kept (the
	// console's history, redelivery's stream sequence).
	DefaultRetention = 30 * 24 * time.Hour
)

// WithDefaults is c with its zero fields set to the defaults, or why New
// would refuse it: a configuration mistake then stops a service at its
// start even when the dispatcher is built later.
func (c Config) WithDefaults() (Config, error) { return c.withDefaults() }

func (c Config) withDefaults() (Config, error) {
	for name, v := range map[string]time.Duration{
		"timeout": c.Timeout, "ack wait": c.AckWait, "initial backoff": c.InitialBackoff,
		"max backoff": c.MaxBackoff, "horizon": c.Horizon, "failing for": c.FailingFor,
		"refresh interval": c.RefreshInterval, "retention": c.Retention,
	} {
		if v < 0 {
			return c, fmt.Errorf("webhook config: %s %s is negative", name, v)
		}
	}
	if c.MaxInFlight < 0 || c.DisableAfter < 0 {
		return c, errors.New("webhook config: max in flight and disable after must not be negative")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Stream == "" {
		c.Stream = "COUPON_EVENTS"
	}
	def(&c.Timeout, DefaultTimeout)
	def(&c.AckWait, 30*time.Second)
	def(&c.InitialBackoff, time.Second)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.Horizon, DefaultHorizon)
	def(&c.FailingFor, 24*time.Hour)
	def(&c.RefreshInterval, DefaultRefreshInterval)
	def(&c.Retention, DefaultRetention)
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = DefaultDisableAfter
	}
	if c.AckWait <= c.Timeout {
		return c, fmt.Errorf("webhook config: ack wait %s must exceed the timeout %s", c.AckWait, c.Timeout)
	}
	if c.MaxBackoff < c.InitialBackoff {
		return c, fmt.Errorf("webhook config: max backoff %s is below the initial backoff %s", c.MaxBackoff, c.InitialBackoff)
	}
	if c.Retention <= c.Horizon {
		return c, fmt.Errorf("webhook config: retention %s must exceed the horizon %s: retries read the attempts", c.Retention, c.Horizon)
	}
	return c, nil
}

// Dispatcher delivers the events of the stream to the ENABLED endpoints of
// a Store. Each endpoint has its own durable pull consumer, webhook-<id>,
// filtered to its event types and read by its own goroutine, so a slow or
// failing endpoint never delays another. A 2xx response acknowledges the
// event; any other outcome naks it with a delay that doubles per attempt,
// until the Horizon passes and it is terminated. Every attempt is recorded.
//
// Several replicas may run a Dispatcher over the same stream and database:
// they bind to the same durable consumers, and JetStream hands each event
// to one of them at a time, so in the normal path each endpoint receives
// each event once. Delivery is at least once, though: an attempt whose
// acknowledgement is lost (a crash, a timeout past AckWait) is made again,
// with the same Coupon-Event-Id, by which receivers deduplicate.
type Dispatcher struct {
	js      jetstream.JetStream
	store   *Store
	log     *slog.Logger
	cfg     Config
	client  *http.Client
	metrics *metrics

	mu      sync.Mutex
	refresh chan chan error // Run's refresh requests; nil when Run is not running
	done    chan struct{}   // closed when that Run returns
}

// New returns a Dispatcher of the events in js to the endpoints of store.
// Its metrics are registered with reg unless it is nil; log nil discards.
func New(js jetstream.JetStream, store *Store, log *slog.Logger, reg prometheus.Registerer, cfg Config) (*Dispatcher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if js == nil || store == nil {
		return nil, errors.New("webhook dispatcher: nil jetstream or store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	var client http.Client
	if cfg.HTTPClient != nil {
		client = *cfg.HTTPClient
	} else {
		client = http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: cfg.Timeout}
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Dispatcher{js: js, store: store, log: log, cfg: cfg, client: &client, metrics: m}, nil
}

// errNotRunning refuses a Refresh while Run is not running.
var errNotRunning = errors.New("webhook dispatcher is not running")

// Run delivers until ctx is done, reading the endpoint table every
// RefreshInterval (and on Refresh) to start consumers for new and
// re-enabled endpoints, stop those of disabled and deleted ones and delete
// the consumers of deleted ones. It returns nil once every consumer it
// started has stopped; an attempt cut short is handed back to JetStream.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.refresh != nil {
		d.mu.Unlock()
		return errors.New("webhook dispatcher is already running")
	}
	refresh, done := make(chan chan error), make(chan struct{})
	d.refresh, d.done = refresh, done
	d.mu.Unlock()

	running := map[int64]*consumer{}
	defer func() {
		for _, c := range running {
			c.cancel()
		}
		for _, c := range running {
			<-c.done
		}
		d.client.CloseIdleConnections()
		d.mu.Lock()
		d.refresh, d.done = nil, nil
		d.mu.Unlock()
		close(done)
	}()

	if err := d.sync(ctx, running); err != nil && ctx.Err() == nil {
		d.log.Warn("webhook refresh failed", "err", err)
	}
	tick := time.NewTicker(d.cfg.RefreshInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := d.sync(ctx, running); err != nil && ctx.Err() == nil {
				d.log.Warn("webhook refresh failed", "err", err)
			}
		case reply := <-refresh:
			reply <- d.sync(ctx, running)
		}
	}
}

// Refresh makes the running Run read the endpoint table now, and returns
// once it has started and stopped consumers accordingly. Call it after
// changing endpoints so that the change takes effect at once.
func (d *Dispatcher) Refresh(ctx context.Context) error {
	d.mu.Lock()
	refresh, done := d.refresh, d.done
	d.mu.Unlock()
	if refresh == nil {
		return errNotRunning
	}
	reply := make(chan error, 1)
	select {
	case refresh <- reply:
	case <-done:
		return errNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// consumer is one endpoint's running consumer.
type consumer struct {
	target target
	cancel context.CancelFunc
	done   chan struct{} // closed when its goroutines have ended

	mu sync.Mutex
	// disabledAt is the updated_at this consumer wrote when it disabled its
	// endpoint and stopped; zero otherwise.
	disabledAt time.Time
}

func (c *consumer) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *consumer) stop() {
	c.cancel()
	<-c.done
}

// selfDisabledAt returns when the consumer disabled its endpoint (zero if
// it did not). Only for an exited consumer.
func (c *consumer) selfDisabledAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.disabledAt
}

// sync makes running match the endpoint table.
func (d *Dispatcher) sync(ctx context.Context, running map[int64]*consumer) error {
	stream, err := d.js.Stream(ctx, d.cfg.Stream)
	if err != nil {
		return fmt.Errorf("webhook refresh: stream %s: %w", d.cfg.Stream, err)
	}
	// The consumer names are listed before the table is read: a consumer
	// listed then was created for an endpoint that already existed, so one
	// whose endpoint the table then lacks belongs to a deleted endpoint.
	var names []string
	lister := stream.ConsumerNames(ctx)
	for name := range lister.Name() {
		names = append(names, name)
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("webhook refresh: list consumers: %w", err)
	}
	targets, err := d.store.targets(ctx)
	if err != nil {
		return fmt.Errorf("webhook refresh: %w", err)
	}
	byID := make(map[int64]target, len(targets))
	for _, t := range targets {
		byID[t.ID] = t
	}

	for id, c := range running {
		t, ok := byID[id]
		switch {
		case !ok || t.Status != StatusEnabled:
		case c.exited() && !c.selfDisabledAt().IsZero() && !t.UpdatedAt.After(c.selfDisabledAt()):
			// It disabled its endpoint after this table was read.
			continue
		case !c.exited() && sameTarget(c.target, t):
			continue
		}
		c.stop()
		delete(running, id)
	}

	var errs []error
	multi := multiFilter(d.js.Conn())
	for _, t := range targets {
		if _, ok := running[t.ID]; ok || t.Status != StatusEnabled {
			continue
		}
		c, err := d.start(ctx, stream, t, multi)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		running[t.ID] = c
	}

	for _, name := range names {
		id, err := strconv.ParseInt(strings.TrimPrefix(name, consumerPrefix), 10, 64)
		if !strings.HasPrefix(name, consumerPrefix) || err != nil {
			continue
		}
		if _, ok := byID[id]; ok {
			continue
		}
		if err := stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			errs = append(errs, fmt.Errorf("webhook refresh: delete consumer %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func sameTarget(a, b target) bool {
	return a.URL == b.URL && a.secret == b.secret && strings.Join(a.EventTypes, ",") == strings.Join(b.EventTypes, ",") &&
		a.CreatedAt.Equal(b.CreatedAt)
}

// multiFilter reports whether the connected server takes several filter
// subjects on one consumer (nats-server 2.10 and later). An older one
// ignores them and sends every subject, so then the consumer takes every
// subject and the dispatcher skips the types the endpoint did not ask for.
func multiFilter(nc *nats.Conn) bool {
	parts := strings.SplitN(strings.TrimPrefix(nc.ConnectedServerVersion(), "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return err1 == nil && err2 == nil && (major > 2 || major == 2 && minor >= 10)
}

func (d *Dispatcher) consumerConfig(t target, multi bool) jetstream.ConsumerConfig {
	start := t.CreatedAt
	cfg := jetstream.ConsumerConfig{
		Durable:     consumerPrefix + strconv.FormatInt(t.ID, 10),
		Description: "webhook endpoint " + strconv.FormatInt(t.ID, 10),
		// From the endpoint's registration, not the consumer's creation, so
		// that the events of the seconds before the first refresh are kept.
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &start,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.AckWait,
		MaxAckPending: d.cfg.MaxInFlight,
	}
	switch {
	case len(t.EventTypes) == 1:
		cfg.FilterSubject = SubjectPrefix + t.EventTypes[0]
	case len(t.EventTypes) > 1 && multi:
		for _, typ := range t.EventTypes {
			cfg.FilterSubjects = append(cfg.FilterSubjects, SubjectPrefix+typ)
		}
	default:
		cfg.FilterSubject = SubjectPrefix + ">"
	}
	return cfg
}

// start creates (or binds to) t's durable consumer and starts reading it.
func (d *Dispatcher) start(ctx context.Context, stream jetstream.Stream, t target, multi bool) (*consumer, error) {
	cons, err := stream.CreateOrUpdateConsumer(ctx, d.consumerConfig(t, multi))
	if err != nil {
		return nil, fmt.Errorf("webhook endpoint %d: create consumer: %w", t.ID, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(d.cfg.MaxInFlight))
	if err != nil {
		return nil, fmt.Errorf("webhook endpoint %d: consume: %w", t.ID, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &consumer{target: t, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer it.Stop()
		d.consume(cctx, c, it)
	}()
	return c, nil
}

// consume delivers c's messages, at most MaxInFlight at once, until ctx is
// done or the iterator fails (the next refresh then starts it again).
func (d *Dispatcher) consume(ctx context.Context, c *consumer, it jetstream.MessagesContext) {
	log := d.log.With("endpoint_id", c.target.ID)
	slots := make(chan struct{}, d.cfg.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("webhook consumer stopped; the next refresh restarts it", "err", err)
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			d.handle(ctx, c, msg, log)
		}()
	}
}

// attempt is the outcome of one POST.
type attempt struct {
	statusCode int
	latency    time.Duration
	err        string
	delivered  bool
}

// handle makes one attempt at msg and settles it: ack, nak with a delay, or
// term; then records it and disables the endpoint if it has failed too long.
func (d *Dispatcher) handle(ctx context.Context, c *consumer, msg jetstream.Msg, log *slog.Logger) {
	// Settling outlives ctx: an attempt that was made is acknowledged and
	// recorded even when the consumer is stopping.
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	meta, err := msg.Metadata()
	if err != nil {
		log.Error("webhook: message without JetStream metadata terminated", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	ev, body, err := encode(msg.Data())
	if err != nil {
		d.metrics.deliveries.WithLabelValues(outcomeDropped).Inc()
		log.Error("webhook: undecodable event terminated", "stream_seq", meta.Sequence.Stream, "err", err)
		_ = msg.Term()
		return
	}
	if !c.target.Accepts(ev.GetType()) {
		d.ack(settle, msg, log)
		return
	}

	a := d.post(ctx, c.target, ev, body)
	if !a.delivered && ctx.Err() != nil {
		// Cut short by the stop, not the receiver's failure: hand it back.
		_ = msg.Nak()
		return
	}
	del := Delivery{
		EndpointID: c.target.ID, EventID: ev.GetId(), EventType: ev.GetType(), StreamSeq: meta.Sequence.Stream,
		Attempt: int(meta.NumDelivered), StatusCode: a.statusCode, Latency: a.latency, Error: a.err, Delivered: a.delivered,
	}
	if a.delivered {
		d.metrics.deliveries.WithLabelValues(outcomeDelivered).Inc()
		d.ack(settle, msg, log)
		if _, err := d.store.RecordDelivery(settle, del); err != nil {
			log.Error("webhook: record delivery", "event_id", del.EventID, "err", err)
		}
		return
	}

	now := d.store.now() // the clock of the recorded attempts
	first, ok, err := d.store.firstAttempt(settle, c.target.ID, del.EventID)
	if err != nil || !ok {
		first = now
	}
	remaining := first.Add(d.cfg.Horizon).Sub(now)
	del.GaveUp = remaining <= 0
	failures, recErr := d.store.RecordDelivery(settle, del)
	if recErr != nil {
		log.Error("webhook: record delivery", "event_id", del.EventID, "err", recErr)
	}
	if del.GaveUp {
		d.metrics.deliveries.WithLabelValues(outcomeGaveUp).Inc()
		log.Warn("webhook: gave up an event past the retry horizon", "event_id", del.EventID,
			"attempts", del.Attempt, "horizon", d.cfg.Horizon, "err", del.Error)
		if err := msg.Term(); err != nil {
			log.Warn("webhook: term", "event_id", del.EventID, "err", err)
		}
	} else {
		d.metrics.deliveries.WithLabelValues(outcomeFailed).Inc()
		if err := msg.NakWithDelay(min(d.backoff(del.Attempt), remaining)); err != nil {
			log.Warn("webhook: nak", "event_id", del.EventID, "err", err)
		}
	}
	if recErr == nil {
		d.disableIfFailing(settle, c, failures, del, now, log)
	}
}

// backoff is the wait after the n-th failed attempt.
func (d *Dispatcher) backoff(n int) time.Duration {
	b := d.cfg.InitialBackoff
	for i := 1; i < n && b < d.cfg.MaxBackoff; i++ {
		b *= 2
	}
	return min(b, d.cfg.MaxBackoff)
}

// disableIfFailing disables c's endpoint and stops c when the run of
// failures is too long.
func (d *Dispatcher) disableIfFailing(ctx context.Context, c *consumer, f Failures, last Delivery, now time.Time, log *slog.Logger) {
	var reason string
	switch {
	case f.Consecutive >= d.cfg.DisableAfter:
		reason = fmt.Sprintf("%d consecutive failed deliveries, the last: %s", f.Consecutive, last.Error)
	case !f.Since.IsZero() && now.Sub(f.Since) >= d.cfg.FailingFor:
		reason = fmt.Sprintf("deliveries failing since %s, the last: %s", f.Since.Format(time.RFC3339), last.Error)
	default:
		return
	}
	changed, at, err := d.store.disable(ctx, c.target.ID, reason)
	if err != nil {
		log.Error("webhook: disable failing endpoint", "err", err)
		return
	}
	if changed {
		d.metrics.disabled.Inc()
		log.Warn("webhook endpoint disabled", "url", c.target.URL, "reason", reason)
	}
	c.mu.Lock()
	c.disabledAt = at
	c.mu.Unlock()
	c.cancel()
}

func (d *Dispatcher) ack(ctx context.Context, msg jetstream.Msg, log *slog.Logger) {
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("webhook: ack failed; the event may be delivered again", "err", err)
	}
}

// encode decodes an event and renders the body of its delivery.
func encode(data []byte) (*couponeventsv1.Event, []byte, error) {
	ev := &couponeventsv1.Event{}
	if err := proto.Unmarshal(data, ev); err != nil {
		return nil, nil, fmt.Errorf("decode event: %w", err)
	}
	if ev.GetId() == "" || len(ev.GetId()) > 255 || ev.GetType() == "" || len(ev.GetType()) > 64 {
		return nil, nil, fmt.Errorf("decode event: bad id %q or type %q", ev.GetId(), ev.GetType())
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
	if err != nil {
		return nil, nil, fmt.Errorf("encode event: %w", err)
	}
	// protojson varies its spacing on purpose; compacting makes the body
	// the same for every attempt.
	var b bytes.Buffer
	if err := json.Compact(&b, js); err != nil {
		return nil, nil, fmt.Errorf("encode event: %w", err)
	}
	return ev, b.Bytes(), nil
}

// post sends one signed request for ev to t.
func (d *Dispatcher) post(ctx context.Context, t target, ev *couponeventsv1.Event, body []byte) attempt {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return attempt{err: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderEventID, ev.GetId())
	req.Header.Set(HeaderEventType, ev.GetType())
	req.Header.Set(HeaderSignature, Sign(t.secret, d.store.now(), body))
	start := time.Now()
	resp, err := d.client.Do(req)
	a := attempt{latency: time.Since(start)}
	d.metrics.latency.Observe(a.latency.Seconds())
	if err != nil {
		a.err = err.Error()
		return a
	}
	defer resp.Body.Close()
	a.statusCode = resp.StatusCode
	a.delivered = resp.StatusCode >= 200 && resp.StatusCode < 300
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain-int64(len(head))))
	if !a.delivered {
		a.err = fmt.Sprintf("status %d", resp.StatusCode)
		if h := strings.TrimSpace(string(head)); h != "" {
			a.err += ": " + h
		}
	}
	return a
}

// Redeliver posts event eventID to endpoint endpointID once more, whatever
// its earlier attempts' outcome and the endpoint's status, and records the
// attempt as manual. The event is read back from the stream by the
// sequence recorded with an earlier attempt (at any endpoint), so only an
// event that was attempted and is still in the stream can be redelivered.
// A failed attempt is reported in the Delivery, not as an error.
func (d *Dispatcher) Redeliver(ctx context.Context, endpointID int64, eventID string) (Delivery, error) {
	t, err := d.store.target(ctx, endpointID)
	if err != nil {
		return Delivery{}, err
	}
	last, err := d.store.lastAttempt(ctx, endpointID, eventID)
	if err != nil {
		return Delivery{}, err
	}
	stream, err := d.js.Stream(ctx, d.cfg.Stream)
	if err != nil {
		return Delivery{}, participant.Unavailable("redeliver: stream "+d.cfg.Stream, err)
	}
	gone := participant.Errorf(participant.ENOTFOUND, ReasonEventNotFound, "event %s is no longer in the stream", eventID)
	raw, err := stream.GetMsg(ctx, last.StreamSeq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return Delivery{}, gone
	case err != nil:
		return Delivery{}, participant.Unavailable("redeliver: read event", err)
	}
	ev, body, err := encode(raw.Data)
	if err != nil || ev.GetId() != eventID {
		return Delivery{}, gone
	}
	if !t.Accepts(ev.GetType()) {
		return Delivery{}, participant.Errorf(participant.EREFUSED, ReasonEventNotSubscribed,
			"webhook endpoint %d does not subscribe to %s events", endpointID, ev.GetType())
	}
	n, err := d.store.attempts(ctx, endpointID, eventID)
	if err != nil {
		return Delivery{}, err
	}
	a := d.post(ctx, t, ev, body)
	del := Delivery{
		EndpointID: endpointID, EventID: eventID, EventType: ev.GetType(), StreamSeq: raw.Sequence,
		Attempt: n + 1, Manual: true, StatusCode: a.statusCode, Latency: a.latency, Error: a.err, Delivered: a.delivered,
	}
	if a.delivered {
		d.metrics.deliveries.WithLabelValues(outcomeDelivered).Inc()
	} else {
		d.metrics.deliveries.WithLabelValues(outcomeFailed).Inc()
	}
	if _, err := d.store.RecordDelivery(ctx, del); err != nil {
		return del, err
	}
	return del, nil
}
