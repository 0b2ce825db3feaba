// Package metrics exports the coupon service's Prometheus metrics: the gRPC
// families of go-grpc-middleware's provider, claims by outcome, the domain's
// counters, job lag, claim batch sizes, pool stats, remaining stock per
// active template and build info. Each App has its own registry, so several
// services in one test process do not collide.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// LatencyBuckets are the handling-time histogram buckets in seconds, dense
// around the 50 ms p99 target.
var LatencyBuckets = []float64{.001, .0025, .005, .01, .02, .03, .05, .075, .1, .25, .5, 1, 2.5, 5}

// ReasonIssued is the claims_total reason of a claim that returned a coupon.
const ReasonIssued = "ISSUED"

// claimMethods are the methods counted in coupon_claims_total.
var claimMethods = map[string]string{
	couponv1.CouponService_ClaimCoupon_FullMethodName:        "ClaimCoupon",
	couponv1.CouponService_ClaimCouponByPhone_FullMethodName: "ClaimCouponByPhone",
}

// Metrics is one service's registry and the collectors fed by calls.
type Metrics struct {
	Registry           *prometheus.Registry
	grpc               *grpcprom.ServerMetrics
	claims             *prometheus.CounterVec
	batches            prometheus.Histogram
	ready              prometheus.Gauge
	barrierDeleted     *prometheus.CounterVec
	barrierOldest      prometheus.Gauge
	barrierKeptUnknown prometheus.Gauge
	barrierKeptOpen    prometheus.Gauge
	connsOpen          *prometheus.GaugeVec
	connsLimit         *prometheus.GaugeVec
	connsRefused       *prometheus.CounterVec
	authFailures       *prometheus.CounterVec
	authThrottled      *prometheus.CounterVec
}

// Surfaces label the authentication metrics: gRPC callers, the JSON API
// through the HTTP gateway, and the console's sign-in.
var Surfaces = []string{"grpc", "http", "console"}

// New returns a registry with the process, Go, build and gRPC families.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(LatencyBuckets))),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coupon_claims_total",
			Help: "Claim calls by method and outcome: ISSUED, or the refusal's ErrorInfo reason (SOLD_OUT, USER_LIMIT_REACHED, UNAVAILABLE, ...).",
		}, []string{"method", "reason"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coupon_ready",
			Help: "1 while the main database, every shard database and Redis answer (gRPC health SERVING).",
		}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "coupon_claim_batch_size",
			Help:    "Claims written per shard transaction (batches grow with load).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		barrierDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coupon_barrier_rows_deleted_total",
			Help: "DTM barrier rows the janitor deleted: why=finished (past retention, transaction finished) or expired (past max age).",
		}, []string{"why"}),
		barrierOldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coupon_barrier_oldest_row_age_seconds",
			Help: "Age of the oldest DTM barrier row left after the janitor's last round.",
		}),
		barrierKeptUnknown: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coupon_barrier_rows_kept_unknown",
			Help: "Barrier rows past retention kept because the coordinator does not know their transaction (a wrong coordinator address shows here).",
		}),
		barrierKeptOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coupon_barrier_rows_kept_unfinished",
			Help: "Barrier rows past max age kept because the coordinator reports their transaction unfinished: a Confirm, Cancel or compensation retried for longer than barrier.max_age.",
		}),
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coupon_listener_connections",
			Help: "Connections open on a listener (grpc, http, ops, pprof).",
		}, []string{"listener"}),
		connsLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coupon_listener_connection_limit",
			Help: "A listener's connection cap (0: none).",
		}, []string{"listener"}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coupon_listener_connections_refused_total",
			Help: "Connections a listener closed on accept because it was at its cap.",
		}, []string{"listener"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coupon_auth_failures_total",
			Help: "Failed authentications by surface: grpc and http (the JSON API) calls refused UNAUTHENTICATED, console sign-ins refused.",
		}, []string{"surface"}),
		authThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coupon_auth_throttled_total",
			Help: "Calls and sign-ins refused without checking their credential because their client address failed too often (RATE_LIMITED), by surface.",
		}, []string{"surface"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
		m.grpc, m.claims, m.batches, m.ready, m.barrierDeleted, m.barrierOldest, m.barrierKeptUnknown, m.barrierKeptOpen,
		m.connsOpen, m.connsLimit, m.connsRefused,
		m.authFailures, m.authThrottled,
	)
	for _, s := range Surfaces {
		m.authFailures.WithLabelValues(s)
		m.authThrottled.WithLabelValues(s)
	}
	m.barrierDeleted.WithLabelValues("finished")
	m.barrierDeleted.WithLabelValues("expired")
	// Outcomes every dashboard shows start at zero rather than appear late.
	for _, name := range claimMethods {
		m.claims.WithLabelValues(name, ReasonIssued)
	}
	return m
}

func buildInfo() prometheus.Collector {
	version, revision, goVersion := "unknown", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		version, goVersion = bi.Main.Version, bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "coupon_build_info",
		Help:        "Always 1; the labels tell the running build.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// SetReady records the readiness the gRPC health service reports.
func (m *Metrics) SetReady(ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.ready.Set(v)
}

// ObserveBatch records the size of one claim batch (couponmysql.Config.ObserveBatch).
func (m *Metrics) ObserveBatch(size int) { m.batches.Observe(float64(size)) }

// ObserveBarrierJanitor records one janitor round.
func (m *Metrics) ObserveBarrierJanitor(finished, expired, keptUnknown, keptUnfinished int64, oldest time.Duration) {
	m.barrierDeleted.WithLabelValues("finished").Add(float64(finished))
	m.barrierDeleted.WithLabelValues("expired").Add(float64(expired))
	m.barrierKeptUnknown.Set(float64(keptUnknown))
	m.barrierKeptOpen.Set(float64(keptUnfinished))
	m.barrierOldest.Set(oldest.Seconds())
}

// Listener is one listener's connection counters.
type Listener struct {
	Open    prometheus.Gauge
	Refused prometheus.Counter
}

// Listener returns the counters of the listener called name, whose cap is
// limit (0: none), starting at zero.
func (m *Metrics) Listener(name string, limit int) Listener {
	m.connsLimit.WithLabelValues(name).Set(float64(limit))
	return Listener{Open: m.connsOpen.WithLabelValues(name), Refused: m.connsRefused.WithLabelValues(name)}
}

// AuthFailed counts a failed authentication on surface (grpc, http, console).
func (m *Metrics) AuthFailed(surface string) { m.authFailures.WithLabelValues(surface).Inc() }

// AuthThrottled counts a call or sign-in refused because its client failed
// authentication too often.
func (m *Metrics) AuthThrottled(surface string) { m.authThrottled.WithLabelValues(surface).Inc() }

// InitializeMetrics pre-creates the gRPC series of every method of s at zero.
func (m *Metrics) InitializeMetrics(s *grpc.Server) { m.grpc.InitializeMetrics(s) }

// Unary counts and times every call (grpc_server_*) and claims by outcome.
func (m *Metrics) Unary() grpc.UnaryServerInterceptor {
	rpcs := m.grpc.UnaryServerInterceptor()
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := rpcs(ctx, req, info, h)
		if name, ok := claimMethods[info.FullMethod]; ok {
			m.claims.WithLabelValues(name, outcome(err)).Inc()
		}
		return resp, err
	}
}

// Stream counts and times streaming calls (health Watch, reflection).
func (m *Metrics) Stream() grpc.StreamServerInterceptor { return m.grpc.StreamServerInterceptor() }

// outcome is the claims_total reason of a claim's result.
func outcome(err error) string {
	if err == nil {
		return ReasonIssued
	}
	st := status.Convert(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() != "" {
			return ei.GetReason()
		}
	}
	return st.Code().String()
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// TemplateStock is one active template's remaining stock.
type TemplateStock struct {
	TemplateID int64
	Remaining  int64
}

// Sources are where the service's state is read at scrape time.
type Sources struct {
	Service func() participant.Stats
	// Jobs maps a background job's name to when its last round ended well
	// on this replica (zero: none yet).
	Jobs map[string]func() time.Time
	// Pools export the database pools' statistics, labelled by database
	// (main, shard_0, ...): the MySQL stores' PoolCollectors.
	Pools []prometheus.Collector
	Redis func() *goredis.PoolStats
	// Stock lists the remaining stock of the active templates; it is
	// called at most once per StockRefresh.
	Stock        func(ctx context.Context) ([]TemplateStock, error)
	StockRefresh time.Duration
	// Locked counts LOCKED coupons, and those locked for longer than the
	// stuck threshold, across every shard; called at most once per
	// LockedRefresh.
	Locked        func(ctx context.Context) (locked, stuck int64, err error)
	LockedRefresh time.Duration
	Now           func() time.Time
}

// Register adds the collectors reading src.
func (m *Metrics) Register(src Sources) error {
	if src.Now == nil {
		src.Now = time.Now
	}
	cs := []prometheus.Collector{&stateCollector{src: src}}
	cs = append(cs, src.Pools...)
	if src.Stock != nil {
		cs = append(cs, &cached{name: "stock", every: src.StockRefresh, now: src.Now, descs: []*prometheus.Desc{descStock},
			fetch: func(ctx context.Context) ([]prometheus.Metric, error) {
				stocks, err := src.Stock(ctx)
				ms := make([]prometheus.Metric, len(stocks))
				for i, s := range stocks {
					ms[i] = prometheus.MustNewConstMetric(descStock, prometheus.GaugeValue, float64(s.Remaining), strconv.FormatInt(s.TemplateID, 10))
				}
				return ms, err
			}})
	}
	if src.Locked != nil {
		cs = append(cs, &cached{name: "locked", every: src.LockedRefresh, now: src.Now, descs: []*prometheus.Desc{descLocked, descStuck},
			fetch: func(ctx context.Context) ([]prometheus.Metric, error) {
				locked, stuck, err := src.Locked(ctx)
				return []prometheus.Metric{
					prometheus.MustNewConstMetric(descLocked, prometheus.GaugeValue, float64(locked)),
					prometheus.MustNewConstMetric(descStuck, prometheus.GaugeValue, float64(stuck)),
				}, err
			}})
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, m.Registry.Register(c))
	}
	return errors.Join(errs...)
}

var (
	descTCC = prometheus.NewDesc("coupon_tcc_changes_total",
		"Coupon changes made by TCC branches, by op: lock (Try), consume (Confirm), release (Cancel). Barrier skips are not counted.", []string{"op"}, nil)
	descConfirmWithoutLock = prometheus.NewDesc("coupon_tcc_confirm_without_lock_total",
		"Confirms that found no lock of their own global transaction: an order may be paid without its coupon. Alert on any.", nil, nil)
	descCacheHits = prometheus.NewDesc("coupon_template_cache_hits_total",
		"Template reads served from the in-memory cache.", nil, nil)
	descCacheMisses = prometheus.NewDesc("coupon_template_cache_misses_total",
		"Template reads loaded from Redis or MySQL.", nil, nil)
	descJobLast = prometheus.NewDesc("coupon_job_last_success_timestamp_seconds",
		"When the job's last round ended without error on this replica (0: none yet; one replica holds each job's lease, so take the max over replicas).", []string{"job"}, nil)
	descJobLag = prometheus.NewDesc("coupon_job_lag_seconds",
		"Seconds since the job's last good round on this replica; absent until the first.", []string{"job"}, nil)
	descRedisHits   = prometheus.NewDesc("coupon_redis_pool_hits_total", "Redis pool: free connection found.", nil, nil)
	descRedisMisses = prometheus.NewDesc("coupon_redis_pool_misses_total", "Redis pool: no free connection, a new one dialled.", nil, nil)
	descRedisTimeo  = prometheus.NewDesc("coupon_redis_pool_timeouts_total", "Redis pool: waits for a connection that timed out.", nil, nil)
	descRedisTotal  = prometheus.NewDesc("coupon_redis_pool_connections", "Redis pool: open connections.", nil, nil)
	descRedisIdle   = prometheus.NewDesc("coupon_redis_pool_idle_connections", "Redis pool: idle connections.", nil, nil)
	descRedisStale  = prometheus.NewDesc("coupon_redis_pool_stale_connections_total", "Redis pool: stale connections removed.", nil, nil)
	descStock       = prometheus.NewDesc("coupon_template_remaining_stock",
		"Remaining stock of each active template, from the Redis counters (refreshed every few seconds).", []string{"template_id"}, nil)
	descLocked = prometheus.NewDesc("coupon_locked_coupons",
		"Coupons LOCKED by a TCC Try and not yet consumed or released, across every shard.", nil, nil)
	descStuck = prometheus.NewDesc("coupon_locked_coupons_stuck",
		"LOCKED coupons locked longer ago than metrics.stuck_locked_after: their transaction is not finishing.", nil, nil)
)

// stateCollector reads the service's counters at scrape time.
type stateCollector struct{ src Sources }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTCC, descConfirmWithoutLock, descCacheHits, descCacheMisses, descJobLast, descJobLag,
		descRedisHits, descRedisMisses, descRedisTimeo, descRedisTotal, descRedisIdle, descRedisStale} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.src.Service != nil {
		s := c.src.Service()
		counter(descTCC, float64(s.Locks), "lock")
		counter(descTCC, float64(s.Consumes), "consume")
		counter(descTCC, float64(s.Releases), "release")
		counter(descConfirmWithoutLock, float64(s.ConfirmWithoutLock))
		counter(descCacheHits, float64(s.CacheHits))
		counter(descCacheMisses, float64(s.CacheMisses))
	}
	now := c.src.Now()
	for name, last := range c.src.Jobs {
		t := last()
		if t.IsZero() {
			gauge(descJobLast, 0, name)
			continue
		}
		gauge(descJobLast, float64(t.UnixNano())/1e9, name)
		gauge(descJobLag, now.Sub(t).Seconds(), name)
	}
	if c.src.Redis != nil {
		if p := c.src.Redis(); p != nil {
			counter(descRedisHits, float64(p.Hits))
			counter(descRedisMisses, float64(p.Misses))
			counter(descRedisTimeo, float64(p.Timeouts))
			gauge(descRedisTotal, float64(p.TotalConns))
			gauge(descRedisIdle, float64(p.IdleConns))
			counter(descRedisStale, float64(p.StaleConns))
		}
	}
}

// cached serves metrics read from the stores at most once per period, so
// scrapes from several Prometheus servers do not multiply the reads. A
// failed read keeps the last good values and reports read_ok 0.
type cached struct {
	name  string
	every time.Duration
	now   func() time.Time
	descs []*prometheus.Desc
	fetch func(ctx context.Context) ([]prometheus.Metric, error)

	mu     sync.Mutex
	okDesc *prometheus.Desc
	at     time.Time
	ms     []prometheus.Metric
	ok     bool
}

// readOK describes coupon_metrics_read_ok of this collector's read.
func (c *cached) readOK() *prometheus.Desc {
	if c.okDesc == nil {
		c.okDesc = prometheus.NewDesc("coupon_metrics_read_ok",
			"1 when the last read behind the named cached metrics (stock, locked) succeeded.", nil, prometheus.Labels{"read": c.name})
	}
	return c.okDesc
}

func (c *cached) Describe(ch chan<- *prometheus.Desc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.descs {
		ch <- d
	}
	ch <- c.readOK()
}

func (c *cached) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.at.IsZero() || now.Sub(c.at) >= c.every {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ms, err := c.fetch(ctx)
		cancel()
		c.at, c.ok = now, err == nil
		if err == nil {
			c.ms = ms
		}
	}
	up := 0.0
	if c.ok {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.readOK(), prometheus.GaugeValue, up)
	for _, m := range c.ms {
		ch <- m
	}
}
