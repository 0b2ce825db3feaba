package app

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/opencoupon/coupon/internal/jobs"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/internal/webhook"
	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/rpc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Webhooks configures the delivery of the lifecycle events to the HTTPS
// endpoints admins register (internal/webhook, docs/webhooks.md). They run
// only with events on (Events.URL set). Zero durations and counts take
// internal/webhook's defaults.
type Webhooks struct {
	// Enabled runs the dispatcher and serves the webhook calls; without it
	// they answer WEBHOOKS_OFF. The coupon command turns it on by default.
	Enabled bool
	// AllowHTTP accepts plain http URLs to any host, not only loopback.
	AllowHTTP bool
	// Timeout bounds one attempt; Horizon is how long an event is retried;
	// MaxBackoff caps the wait between attempts; DisableAfter consecutive
	// failures disable an endpoint; Refresh is how often the endpoint
	// table is read again.
	Timeout      time.Duration
	Horizon      time.Duration
	MaxBackoff   time.Duration
	DisableAfter int
	Refresh      time.Duration
	// Retention is how long delivery attempts are kept; it must exceed
	// Horizon, since retries read them.
	Retention time.Duration
}

// pruneInterval is how often one replica deletes the delivery attempts
// past webhooks.retention.
const pruneInterval = time.Hour

// webhookPoolSize is the main-database pool of the webhook store: the
// endpoint table, one delivery record per attempt, the admin calls.
const webhookPoolSize = 4

// ackWaitMargin is what JetStream's ack wait adds to a long attempt
// timeout (the dispatcher requires it to exceed the timeout).
const ackWaitMargin = 20 * time.Second

// webhooks is this replica's webhook delivery: the endpoint store over a
// small pool of the main database of its own (the coupon stores do not
// hand theirs out), and the dispatcher reading the events stream over a
// NATS connection of its own. It serves the admin server's webhook calls
// (rpc.Webhooks), writing the audit row of each change after the change:
// the store has no transaction to share, so a failed audit write is
// logged, not undone.
type webhooks struct {
	db     *sql.DB
	url    string
	stream string
	store  *webhook.Store
	dcfg   webhook.Config
	reg    prometheus.Registerer
	prune  *jobs.Job // deletes attempts past the retention
	log    *slog.Logger
	now    func() time.Time

	mu     sync.Mutex // guards what connect sets
	nc     *nats.Conn
	disp   *webhook.Dispatcher // nil until Run connected
	closed bool
}

var _ rpc.Webhooks = (*webhooks)(nil)

// openWebhooks opens the pool and checks the dispatcher's configuration.
// Run connects to NATS and runs the dispatcher, whose metrics go to reg;
// Close closes the connection and the pool.
func openWebhooks(ctx context.Context, cfg Config, locker jobs.Locker, log *slog.Logger, reg prometheus.Registerer) (w *webhooks, err error) {
	if p := cfg.Events.SubjectPrefix; p != "" && p != webhook.SubjectPrefix {
		return nil, fmt.Errorf("webhooks need events.subject_prefix %q, not %q (or webhooks.enabled: false)", webhook.SubjectPrefix, p)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	w = &webhooks{log: log, now: now}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if w.db, err = openPool(ctx, cfg.MySQL.MainDSN, webhookPoolSize); err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	w.url = cfg.Events.URL
	w.store = webhook.NewStore(w.db, webhook.StoreConfig{AllowHTTP: cfg.Webhooks.AllowHTTP, Now: cfg.Now})
	dc := webhook.Config{
		Stream: cfg.Events.Stream, Timeout: cfg.Webhooks.Timeout, Horizon: cfg.Webhooks.Horizon,
		MaxBackoff: cfg.Webhooks.MaxBackoff, DisableAfter: cfg.Webhooks.DisableAfter, RefreshInterval: cfg.Webhooks.Refresh,
		Retention: cfg.Webhooks.Retention,
	}
	if dc.Stream == "" {
		dc.Stream = relay.DefaultStream
	}
	w.stream = dc.Stream
	if dc.Timeout+ackWaitMargin > 30*time.Second {
		dc.AckWait = dc.Timeout + ackWaitMargin
	}
	resolved, err := dc.WithDefaults()
	if err != nil {
		return nil, err
	}
	w.dcfg, w.reg = dc, reg
	retention := resolved.Retention
	w.prune = &jobs.Job{
		Name: "webhook-prune", Schedule: jobs.Every(pruneInterval), Locker: locker, Lease: "job:webhook-prune",
		TTL: jobs.LeaseTTL(pruneInterval, 10*time.Minute), Log: log,
		Round: func(ctx context.Context) error {
			n, err := w.store.PruneDeliveries(ctx, now().Add(-retention), 1000)
			if n > 0 {
				log.InfoContext(ctx, "webhook delivery attempts deleted", "deleted", n, "older_than", retention.String())
			}
			return err
		},
	}
	return w, nil
}

// connect connects to NATS (relay.Dial) and builds the dispatcher; Run
// calls it until it succeeds. With no reconnect buffer an acknowledgement
// made while disconnected fails at once and JetStream hands the event out
// again.
func (w *webhooks) connect() (*webhook.Dispatcher, jetstream.JetStream, error) {
	nc, err := relay.Dial(w.url, "coupon-webhooks", w.log)
	if err != nil {
		return nil, nil, fmt.Errorf("webhooks: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("webhooks: %w", err)
	}
	disp, err := webhook.New(js, w.store, w.log, w.reg, w.dcfg)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		nc.Close()
		return nil, nil, nats.ErrConnectionClosed
	}
	w.nc, w.disp = nc, disp
	return disp, js, nil
}

// dispatcher is the dispatcher once Run has connected, else nil.
func (w *webhooks) dispatcher() *webhook.Dispatcher {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.disp
}

// redeliverDeadline gives RedeliverWebhookEvent, which waits for the
// receiver's answer, a server-side deadline that outlasts an attempt
// (webhooks.timeout) and its record, unless deadline.methods names the
// method or admin calls have no bound.
func redeliverDeadline(d Deadlines, timeout time.Duration) Deadlines {
	m := couponv1.AdminService_RedeliverWebhookEvent_FullMethodName
	for k := range d.Methods {
		if methodKey(k) == methodKey(m) {
			return d
		}
	}
	admin := orDefault(d.Admin, DefaultAdminDeadline)
	if admin < 0 {
		return d
	}
	methods := maps.Clone(d.Methods) // the caller's map stays as it was
	if methods == nil {
		methods = map[string]time.Duration{}
	}
	methods[m] = max(admin, orDefault(timeout, webhook.DefaultTimeout)+5*time.Second)
	d.Methods = methods
	return d
}

// openPool opens a pool of at most n connections to dsn, reading times as
// UTC, and checks that it connects.
func openPool(ctx context.Context, dsn string, n int) (*sql.DB, error) {
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	c.ParseTime, c.Loc = true, time.UTC
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, fmt.Errorf("mysql %s: %w", c.Addr, err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(time.Hour)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mysql %s/%s: %w", c.Addr, c.DBName, err)
	}
	return db, nil
}

// streamPoll is how often Run looks for the events stream before it starts.
const streamPoll = 500 * time.Millisecond

// Run delivers until ctx is done. It connects to NATS (again every
// streamPoll while NATS is down: a NATS that is down delays deliveries,
// never the service) and starts the dispatcher once the events stream
// exists: the relay creates it at its first round, and until then the
// dispatcher would only warn of its absence at every refresh.
func (w *webhooks) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.prune.Run(ctx) })
	tick := time.NewTicker(streamPoll)
	defer tick.Stop()
	var disp *webhook.Dispatcher
	var js jetstream.JetStream
	for failures := 0; ; {
		if disp == nil {
			var err error
			if disp, js, err = w.connect(); err != nil {
				if failures++; failures == 1 || failures%120 == 0 {
					w.log.WarnContext(ctx, "webhooks cannot reach NATS; deliveries wait", "failures", failures, "err", err)
				}
			}
		}
		if disp != nil {
			if _, err := js.Stream(ctx, w.stream); err == nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	if err := disp.Run(ctx); err != nil {
		w.log.Error("webhook dispatcher stopped", "err", err)
	}
}

// Close closes the NATS connection and the pool, after Run returned.
func (w *webhooks) Close() error {
	w.mu.Lock()
	w.closed = true
	if w.nc != nil {
		w.nc.Close()
	}
	w.mu.Unlock()
	if w.db != nil {
		return w.db.Close()
	}
	return nil
}

// refreshTimeout bounds how long a change waits for the dispatcher to
// take it up; past it the next refresh does.
const refreshTimeout = 5 * time.Second

// refresh makes this replica's dispatcher take up a change at once (the
// other replicas do at their next refresh). Best effort: a dispatcher that
// is not running yet, or a stream the relay has not created yet, reads the
// table at its next refresh anyway.
func (w *webhooks) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	disp := w.dispatcher()
	if disp == nil {
		return // Run reads the table when it starts the dispatcher
	}
	if err := disp.Refresh(ctx); err != nil {
		w.log.DebugContext(ctx, "webhook refresh after a change", "err", err)
	}
}

func (w *webhooks) CreateEndpoint(ctx context.Context, url string, types []string, actor participant.Actor) (webhook.Endpoint, string, error) {
	ep, secret, err := w.store.CreateEndpoint(ctx, url, types, actor.Identity)
	if err != nil {
		return webhook.Endpoint{}, "", err
	}
	w.audit(ctx, actor, ep.ID, nil, ep) // Endpoint carries no secret
	w.refresh(ctx)
	return ep, secret, nil
}

func (w *webhooks) ListEndpoints(ctx context.Context) ([]webhook.Endpoint, error) {
	return w.store.ListEndpoints(ctx)
}

func (w *webhooks) GetEndpoint(ctx context.Context, id int64) (webhook.Endpoint, error) {
	return w.store.GetEndpoint(ctx, id)
}

func (w *webhooks) SetEnabled(ctx context.Context, id int64, enabled bool, reason string, actor participant.Actor) (webhook.Endpoint, error) {
	before, err := w.store.GetEndpoint(ctx, id)
	if err != nil {
		return webhook.Endpoint{}, err
	}
	ep, err := w.store.SetEnabled(ctx, id, enabled, reason)
	if err != nil {
		return webhook.Endpoint{}, err
	}
	w.audit(ctx, actor, id, before, ep)
	w.refresh(ctx)
	return ep, nil
}

func (w *webhooks) DeleteEndpoint(ctx context.Context, id int64, actor participant.Actor) error {
	before, err := w.store.GetEndpoint(ctx, id)
	if err != nil {
		return err
	}
	if err := w.store.DeleteEndpoint(ctx, id); err != nil {
		return err
	}
	w.audit(ctx, actor, id, before, nil)
	w.refresh(ctx)
	return nil
}

func (w *webhooks) ListDeliveries(ctx context.Context, endpointID int64, page webhook.Page) ([]webhook.Delivery, error) {
	return w.store.ListDeliveries(ctx, endpointID, page)
}

// redelivery is what the audit log records of a redelivery.
type redelivery struct {
	EventID    string
	Attempt    int
	Delivered  bool
	StatusCode int
	Error      string `json:",omitempty"`
}

func (w *webhooks) Redeliver(ctx context.Context, endpointID int64, eventID string, actor participant.Actor) (webhook.Delivery, error) {
	disp := w.dispatcher()
	if disp == nil {
		return webhook.Delivery{}, participant.Unavailable("redeliver", errors.New("not connected to NATS yet"))
	}
	d, err := disp.Redeliver(ctx, endpointID, eventID)
	if err != nil && d.EventID == "" {
		return webhook.Delivery{}, err // nothing was sent
	}
	w.audit(ctx, actor, endpointID, nil, redelivery{
		EventID: d.EventID, Attempt: d.Attempt, Delivered: d.Delivered, StatusCode: d.StatusCode, Error: d.Error,
	})
	return d, err
}

// audit appends the audit row of a change to endpoint id: before and after
// as JSON, before nil for a creation (and a redelivery), after nil for a
// deletion. The change is made by then, so a failed write is logged.
func (w *webhooks) audit(ctx context.Context, actor participant.Actor, id int64, before, after any) {
	err := func() error {
		var b, a []byte
		var err error
		if before != nil {
			if b, err = json.Marshal(before); err != nil {
				return err
			}
		}
		if after != nil {
			if a, err = json.Marshal(after); err != nil {
				return err
			}
		}
		identity := actor.Identity
		if identity == "" {
			identity = "anonymous"
		}
		// The change was made: its record must not be lost to the call's
		// deadline or cancellation.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, err = w.db.ExecContext(ctx, `INSERT INTO audit_log (identity, method, entity_type, entity_id, before_json, after_json, created_at)
 VALUES (?,?,?,?,?,?,?)`, identity, actor.Method, participant.EntityWebhook, id, string(b), string(a), w.now().UTC())
		return err
	}()
	if err != nil {
		w.log.ErrorContext(ctx, "webhook change made but not audit-logged", "identity", actor.Identity, "method", actor.Method,
			"endpoint_id", id, "err", err)
	}
}
