// Package app assembles the coupon service from its configuration: the
// stores, the domain service and the gRPC and ops servers. cmd/coupon and
// integration tests both build the service through it.
package app

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/gateway"
	"github.com/opencoupon/coupon/internal/jobs"
	"github.com/opencoupon/coupon/internal/metrics"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/internal/tracing"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponredis "github.com/opencoupon/coupon/participant/redis"
	"github.com/opencoupon/coupon/participant/rpc"
	"github.com/opencoupon/coupon/participant/tplcache"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Config is the whole service configuration. Zero durations and limits
// take the defaults documented on their types.
type Config struct {
	GRPCAddr string
	OpsAddr  string
	NodeID   int64
	TLS      TLSConfig
	Auth     auth.Config
	// RateLimit is keyed by the authenticated identity.
	RateLimit RateLimit
	Deadlines Deadlines
	Limits    Limits
	Shutdown  Shutdown
	// ReadinessInterval is how often the dependencies are pinged for the
	// gRPC health status (default 2s).
	ReadinessInterval time.Duration
	Tracing           tracing.Config
	// StockMetricsRefresh bounds how often remaining stock is read for
	// /metrics (default 5s).
	StockMetricsRefresh time.Duration
	// StuckLockedAfter is the age past which a LOCKED coupon counts as
	// stuck in coupon_locked_coupons_stuck (default 10m).
	StuckLockedAfter time.Duration
	MySQL            couponmysql.Config
	Redis            RedisConfig
	Service          participant.Config
	// Now is the service's clock; nil means time.Now. Tests inject one.
	Now func() time.Time

	// HTTP is the JSON API and console listener (internal/gateway).
	HTTP gateway.Config
	// Barrier is the janitor of the shards' DTM barrier tables.
	Barrier BarrierJanitor
	// Events publishes lifecycle events to NATS JetStream: with a URL set
	// the stores write the outbox and this replica runs a relay; without
	// one, events are off.
	Events relay.Config
	// Webhooks delivers the events to admin-registered endpoints; only
	// with events on.
	Webhooks Webhooks

	// Conns caps each listener's open connections.
	Conns Connections
	// Keepalive closes idle, silent and never-handshaked gRPC connections.
	Keepalive Keepalive
	// Ops bounds the ops listener's requests and idle connections.
	Ops OpsServer
	// Pprof is off unless it is given an address of its own.
	Pprof Pprof
}

// Defaults of the Config fields whose zero value means "the default".
const (
	DefaultShutdownTimeout     = 10 * time.Second
	DefaultReadinessInterval   = 2 * time.Second
	DefaultStockMetricsRefresh = 5 * time.Second
	DefaultStuckLockedAfter    = 10 * time.Minute
	DefaultRedisDialTimeout    = 2 * time.Second
	DefaultRedisReadTimeout    = time.Second
	DefaultRedisWriteTimeout   = time.Second
)

// BarrierJanitor configures the cleanup of the shards' DTM barrier tables,
// which DTM never cleans (dtm#389).
type BarrierJanitor struct {
	// Interval between rounds (one replica runs them); 0 or negative: off.
	Interval time.Duration
	// Retention: rows of finished transactions older than this go.
	Retention time.Duration
	// MaxAge: rows older than this go whatever the coordinator says.
	MaxAge time.Duration
	Batch  int
	// Coordinator is DTM's HTTP address, asked whether a transaction finished.
	Coordinator string
	// UnknownFinished treats gids the coordinator does not know as
	// finished (a redis-store coordinator forgets finished ones).
	UnknownFinished bool
}

// Shutdown is how the service stops on SIGTERM.
type Shutdown struct {
	// Delay is how long health reports NOT_SERVING before the listener
	// stops accepting, so load balancers move away first (default 0).
	Delay time.Duration
	// Timeout bounds the drain of calls in flight (default 10s); calls
	// still running then are cancelled.
	Timeout time.Duration
}

// RedisConfig selects a single Redis (one address) or a Redis Cluster
// (several seed addresses, or Cluster set).
type RedisConfig struct {
	Addrs    []string
	Cluster  bool
	Password string
	DB       int
	Prefix   string
	PoolSize int
	// Dial, read and write timeouts (defaults 2s, 1s, 1s). A call's
	// deadline bounds its Redis commands too.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
}

// NewRedis connects to Redis as configured.
func NewRedis(c RedisConfig) goredis.UniversalClient {
	opts := &goredis.UniversalOptions{
		Addrs: c.Addrs, Password: c.Password, DB: c.DB, PoolSize: c.PoolSize,
		DialTimeout:  orDefault(c.DialTimeout, DefaultRedisDialTimeout),
		ReadTimeout:  orDefault(c.ReadTimeout, DefaultRedisReadTimeout),
		WriteTimeout: orDefault(c.WriteTimeout, DefaultRedisWriteTimeout),
		// The server-side deadline of a call must bound its Redis commands.
		ContextTimeoutEnabled: true,
		// No automatic re-sends: a command whose reply timed out may have
		// run. The adapter's scripts are idempotent besides (a cluster
		// client still re-sends on MOVED/ASK and after connection errors).
		MaxRetries: -1,
	}
	if c.Cluster || len(c.Addrs) > 1 {
		opts.IsClusterMode = true
	}
	rdb := goredis.NewUniversalClient(opts)
	rdb.AddHook(couponredis.Breaker())
	return rdb
}

// App is a running coupon service.
type App struct {
	cfg     Config
	log     *slog.Logger
	store   *couponmysql.Stores
	rdb     goredis.UniversalClient
	redis   *couponredis.Adapter
	svc     *participant.Service
	sweeper *participant.Sweeper
	auditor *participant.Auditor
	janitor *jobs.Job      // nil when off
	relay   *relay.Relay   // nil when events are off
	hooks   *webhooks      // nil when webhooks are off
	runs    *reconcileRuns // the console's view of reconcile's runs
	grpc    *grpc.Server
	authn   *auth.Authenticator
	forward *gateway.Forwarding // the HTTP gateway's calls name their client
	conc    *concurrency
	health  *health.Server
	metrics *metrics.Metrics
	tracer  *tracing.Provider
	opsHTTP *http.Server
	// pprofLis is bound by Open when pprof is on, so a wrong address
	// fails at start; pprofHTTP serves it.
	pprofLis  net.Listener
	pprofHTTP *http.Server
	// detached counts handlers answered at their deadline that still run;
	// Close waits for them before it closes the pools they use.
	detached sync.WaitGroup
}

// Open connects to MySQL and Redis and builds the servers.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (a *App, err error) {
	log = slog.New(tracing.LogHandler(log.Handler()))
	a = &App{cfg: cfg, log: log, health: health.NewServer(), metrics: metrics.New(), forward: gateway.NewForwarding()}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()
	cfg.Auth.Clients, cfg.Auth.Events = a.forward, a.metrics
	authn, err := auth.New(cfg.Auth, log)
	if err != nil {
		return nil, err
	}
	a.authn = authn
	if !cfg.Auth.Enabled {
		log.Warn("authentication is off: anyone who reaches the gRPC port can call every method")
	}
	var creds credentials.TransportCredentials
	if cfg.TLS.Enabled() {
		if creds, err = cfg.TLS.credentials(); err != nil {
			return nil, err
		}
	}
	if a.tracer, err = tracing.New(ctx, cfg.Tracing); err != nil {
		return nil, err
	}
	closers = append(closers, func() error { return a.tracer.Shutdown(context.Background()) })

	observe := cfg.MySQL.ObserveBatch
	cfg.MySQL.ObserveBatch = func(n int) {
		a.metrics.ObserveBatch(n)
		if observe != nil {
			observe(n)
		}
	}
	cfg.MySQL.Events = cfg.Events.URL != ""
	if a.store, err = couponmysql.Open(ctx, cfg.MySQL); err != nil {
		return nil, err
	}
	closers = append(closers, a.store.Close)
	if err := a.store.ShardMap.Verify(ctx); err != nil {
		return nil, err
	}
	a.rdb = NewRedis(cfg.Redis)
	closers = append(closers, a.rdb.Close)
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("ping redis %v: %w", cfg.Redis.Addrs, err)
	}
	ids, err := participant.NewIDGen(cfg.NodeID, nil)
	if err != nil {
		return nil, err
	}
	a.redis = couponredis.New(a.rdb, cfg.Redis.Prefix)
	if cfg.Now != nil {
		a.redis.Requests.UseClock(cfg.Now)
	}
	closers = append(closers, func() error { a.redis.Close(); return nil })
	r := a.redis
	templates := tplcache.New(tplcache.Deps{Catalog: a.store.Catalog, Blobs: r.Blobs, Leases: r.Leases, Log: log, Now: cfg.Now},
		tplcache.Config{Refresh: cfg.Service.TemplateRefresh, RedisTTL: cfg.Service.TemplateRedisTTL})
	a.svc, err = participant.NewService(participant.Deps{
		Catalog: a.store.Catalog, Coupons: a.store.Coupons, Branches: a.store.Branches, Phones: a.store.Phones,
		Stock: r.Stock, Requests: r.Requests, Leases: r.Leases, Templates: templates, IDs: ids, Log: log, Now: cfg.Now,
	}, cfg.Service)
	if err != nil {
		return nil, err
	}
	a.sweeper = participant.NewSweeper(a.svc, a.store.Expiry)
	a.runs = &reconcileRuns{dsn: cfg.MySQL.MainDSN}
	a.auditor = participant.NewAuditor(a.svc)
	if a.janitor, err = a.barrierJanitor(); err != nil {
		return nil, err
	}
	if cfg.Events.URL != "" {
		if a.relay, err = relay.New(cfg.Events, a.store.Outbox, r.Leases, log, a.metrics.Registry); err != nil {
			return nil, err
		}
		closers = append(closers, func() error { a.relay.Close(); return nil })
		if cfg.Webhooks.Enabled {
			if a.hooks, err = openWebhooks(ctx, cfg, r.Leases, log, a.metrics.Registry); err != nil {
				return nil, err
			}
			closers = append(closers, a.hooks.Close)
			a.cfg.Deadlines = redeliverDeadline(cfg.Deadlines, cfg.Webhooks.Timeout)
		}
	}
	var hooks rpc.Webhooks // a nil *webhooks would be a non-nil interface
	if a.hooks != nil {
		hooks = a.hooks
	}

	lim := newLimiter(cfg.RateLimit)
	lim.forwarded = a.forward
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(orDefault(cfg.Limits.MaxRecvBytes, DefaultMaxRecvBytes)),
		grpc.MaxSendMsgSize(orDefault(cfg.Limits.MaxSendBytes, DefaultMaxSendBytes)),
		grpc.MaxHeaderListSize(uint32(orDefault(cfg.Limits.MaxHeaderBytes, DefaultMaxHeaderBytes))),
		grpc.ChainUnaryInterceptor(
			a.metrics.Unary(), // outermost: counts every outcome by gRPC code, refusals and panics included
			tracing.WithCallTrace,
			tracing.Annotate,
			// The one place errors become statuses, applied once. Inside
			// the metrics, which count the status it makes, and the
			// tracing, whose context its log lines carry; outside every
			// interceptor that refuses a call, which return domain errors.
			rpc.UnaryErrors(log),
			a.recoverer,
			authn.Unary,
			lim.unary(),
			a.deadline, // outside the concurrency limit: a call answered at its deadline keeps its slot until it ends
			func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				return a.conc.unary(ctx, req, info, h)
			},
		),
		grpc.ChainStreamInterceptor(a.metrics.Stream(), rpc.StreamErrors(log), authn.Stream),
	}
	opts = append(opts, grpcConnOptions(cfg.Keepalive)...)
	opts = append(opts, a.tracer.ServerOptions()...)
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	if cfg.Limits.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(cfg.Limits.MaxConcurrentStreams))
	}
	a.grpc = grpc.NewServer(opts...)
	couponv1.RegisterAdminServiceServer(a.grpc, rpc.NewAdmin(a.svc, hooks, log))
	couponv1.RegisterCouponServiceServer(a.grpc, rpc.NewCoupons(a.svc, log))
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)
	a.conc = newConcurrency(cfg.Limits, a.grpc)
	a.metrics.InitializeMetrics(a.grpc)
	// Not serving until the first readiness check passes.
	a.setServing(false)
	if err := a.metrics.Register(a.metricSources()); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	if cfg.Pprof.Addr != "" {
		if a.pprofLis, err = net.Listen("tcp", cfg.Pprof.Addr); err != nil {
			return nil, fmt.Errorf("listen pprof %s: %w", cfg.Pprof.Addr, err)
		}
		closers = append(closers, a.pprofLis.Close)
	}
	checkDescriptors(log, a.connectionCaps(), a.poolSizes())
	return a, nil
}

// PprofAddr is the address pprof listens on, or "" when it is off.
func (a *App) PprofAddr() string { return addrOf(a.pprofLis) }

// connectionCaps is the sum of the caps of the listeners configured.
func (a *App) connectionCaps() int {
	n := capOf(a.cfg.Conns.GRPC, DefaultGRPCMaxConns)
	if a.cfg.HTTP.Addr != "" {
		n += capOf(a.cfg.Conns.HTTP, DefaultHTTPMaxConns)
	}
	if a.cfg.OpsAddr != "" {
		n += capOf(a.cfg.Conns.Ops, DefaultOpsMaxConns)
	}
	if a.cfg.Pprof.Addr != "" {
		n += DefaultPprofMaxConns
	}
	return n
}

// poolSizes is the most connections the MySQL and Redis pools open.
func (a *App) poolSizes() int {
	n := a.cfg.MySQL.MaxOpenConns * (1 + len(a.cfg.MySQL.ShardDSNs))
	if p := a.cfg.Redis.PoolSize; p > 0 {
		n += p * max(1, len(a.cfg.Redis.Addrs))
	} else {
		n += 10 * runtime.GOMAXPROCS(0) * max(1, len(a.cfg.Redis.Addrs))
	}
	if a.hooks != nil {
		n += webhookPoolSize
	}
	return n
}

// Service is the domain service.
func (a *App) Service() *participant.Service { return a.svc }

// Store is the MySQL stores, one per port.
func (a *App) Store() *couponmysql.Stores { return a.store }

// Redis is the Redis client.
func (a *App) Redis() goredis.UniversalClient { return a.rdb }

// Relay is the event relay, nil when events are off.
func (a *App) Relay() *relay.Relay { return a.relay }

// Metrics is the service's Prometheus registry and collectors.
func (a *App) Metrics() *metrics.Metrics { return a.metrics }

// Close releases the connections, after Serve has returned: claim batches
// still queued are written first, then the pools close.
func (a *App) Close() error {
	a.awaitDetached(orDefault(a.cfg.Shutdown.Timeout, DefaultShutdownTimeout))
	if a.relay != nil {
		a.relay.Close()
	}
	if a.hooks != nil {
		_ = a.hooks.Close()
	}
	err := a.store.Close() // drains the claim batches first
	a.redis.Close()
	_ = a.runs.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if a.pprofLis != nil {
		_ = a.pprofLis.Close() // already closed when ServeListeners ran
	}
	return errors.Join(err, a.rdb.Close(), a.tracer.Shutdown(sctx))
}

// awaitDetached waits up to timeout for the handlers that were answered at
// their deadline and still run (a claim waiting for Redis), so that they
// finish their work — write the coupon or give the stock back — before the
// pools close. Past timeout the stores refuse them as not written.
func (a *App) awaitDetached(timeout time.Duration) {
	done := make(chan struct{})
	go func() { a.detached.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		a.log.Warn("handlers past their deadline still running at close; their writes will be refused", "timeout", timeout)
	}
}

// Serve listens on the configured addresses and serves until ctx is done,
// then stops gracefully.
func (a *App) Serve(ctx context.Context) error {
	lis, err := net.Listen("tcp", a.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen grpc %s: %w", a.cfg.GRPCAddr, err)
	}
	var ops net.Listener
	if a.cfg.OpsAddr != "" {
		if ops, err = net.Listen("tcp", a.cfg.OpsAddr); err != nil {
			lis.Close()
			return fmt.Errorf("listen ops %s: %w", a.cfg.OpsAddr, err)
		}
	}
	if a.cfg.HTTP.Addr != "" {
		web, err := a.StartHTTP(ctx, lis.Addr().String())
		if err != nil {
			lis.Close()
			if ops != nil {
				ops.Close()
			}
			return err
		}
		defer web.Close()
	}
	return a.ServeListeners(ctx, lis, ops)
}

// StartHTTP starts the HTTP listener (cfg.HTTP.Addr): the JSON API and the
// console, calling the service through its own gRPC listener at grpcAddr,
// so they pass the same interceptors. Serve starts it; tests that serve
// with ServeListeners start it themselves.
func (a *App) StartHTTP(ctx context.Context, grpcAddr string) (*gateway.Server, error) {
	var dial []grpc.DialOption
	if a.cfg.TLS.Enabled() {
		// The listener's own loopback address: its certificate names
		// the service's public name, not this address.
		dial = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}))} //nolint:gosec // own listener on loopback
	}
	lis, err := net.Listen("tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen http %s: %w", a.cfg.HTTP.Addr, err)
	}
	lis = limitConns(lis, "http", capOf(a.cfg.Conns.HTTP, DefaultHTTPMaxConns), a.metrics, a.log)
	deps := gateway.Deps{GRPCTarget: grpcAddr, DialOptions: dial, Forwarding: a.forward, Log: a.log, Listener: lis}
	deps.Console.Events, deps.Console.Now = a.metrics, a.cfg.Now
	if a.cfg.Auth.Enabled {
		deps.Console.Identities = a.authn
	}
	deps.Console.Reconcile = a.runs
	s, err := gateway.Start(ctx, a.cfg.HTTP, deps)
	if err != nil {
		lis.Close()
	}
	return s, err
}

// ServeListeners serves gRPC on lis and the ops HTTP endpoints on ops (if
// not nil) until ctx is done. Then it stops gracefully: health turns
// NOT_SERVING, the listener stops accepting after Shutdown.Delay, calls in
// flight drain for up to Shutdown.Timeout, and the background jobs stop.
// Close then flushes the claim batches and closes the pools.
func (a *App) ServeListeners(ctx context.Context, lis, ops net.Listener) error {
	errc := make(chan error, 3)
	lis = limitConns(lis, "grpc", capOf(a.cfg.Conns.GRPC, DefaultGRPCMaxConns), a.metrics, a.log)
	if ops != nil {
		ops = limitConns(ops, "ops", capOf(a.cfg.Conns.Ops, DefaultOpsMaxConns), a.metrics, a.log)
		// Every timeout set: an idle or slow connection cannot hold one
		// of the few ops slots for long.
		a.opsHTTP = &http.Server{
			Handler:           a.opsMux(),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       orDefault(a.cfg.Ops.ReadTimeout, DefaultOpsReadTimeout),
			WriteTimeout:      orDefault(a.cfg.Ops.WriteTimeout, DefaultOpsWriteTimeout),
			IdleTimeout:       orDefault(a.cfg.Ops.IdleTimeout, DefaultOpsIdleTimeout),
			MaxHeaderBytes:    16 << 10,
		}
		go func() {
			if err := a.opsHTTP.Serve(ops); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("ops http: %w", err)
			}
		}()
	}
	if a.pprofLis != nil {
		a.pprofHTTP = a.pprofServer()
		pl := limitConns(a.pprofLis, "pprof", DefaultPprofMaxConns, a.metrics, a.log)
		go func() {
			if err := a.pprofHTTP.Serve(pl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("pprof http: %w", err)
			}
		}()
	}
	go func() {
		if err := a.grpc.Serve(lis); err != nil {
			errc <- fmt.Errorf("grpc: %w", err)
		}
	}()
	// The background jobs run on every replica; a lease keeps one of each active.
	jctx, stopJobs := context.WithCancel(ctx)
	var background sync.WaitGroup
	background.Go(func() { a.sweeper.Run(jctx) })
	background.Go(func() { a.auditor.Run(jctx) })
	if a.janitor != nil {
		background.Go(func() { a.janitor.Run(jctx) })
	}
	if a.relay != nil {
		background.Go(func() { a.relay.Run(jctx) })
	}
	if a.hooks != nil {
		background.Go(func() { a.hooks.Run(jctx) })
	}
	background.Go(func() { a.watchReadiness(jctx) })
	a.log.Info("coupon service serving", "grpc", lis.Addr().String(), "ops", addrOf(ops), "pprof", addrOf(a.pprofLis),
		"auth", a.cfg.Auth.Enabled, "tls", a.cfg.TLS.Enabled(), "callers", len(a.cfg.Auth.Callers))
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	a.log.Info("coupon service stopping: draining calls in flight")
	a.health.Shutdown() // NOT_SERVING from now on, whatever the readiness loop sees
	if d := a.cfg.Shutdown.Delay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case err = <-errc:
			t.Stop()
		}
	}
	stopped := make(chan struct{})
	go func() { a.grpc.GracefulStop(); close(stopped) }()
	timeout := orDefault(a.cfg.Shutdown.Timeout, DefaultShutdownTimeout)
	select {
	case <-stopped:
	case <-time.After(timeout):
		a.log.Warn("drain timed out: cancelling the calls still in flight", "timeout", timeout)
		a.grpc.Stop()
		<-stopped
	}
	stopJobs()
	background.Wait()
	if a.opsHTTP != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.opsHTTP.Shutdown(sctx)
	}
	if a.pprofHTTP != nil {
		_ = a.pprofHTTP.Close() // a profile in progress is not worth waiting for
	}
	a.log.Info("coupon service stopped accepting; calls drained")
	return err
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Migrate creates the configured databases if they are missing and applies
// the migrations to each.
func Migrate(ctx context.Context, cfg couponmysql.Config) error {
	for _, dsn := range append([]string{cfg.MainDSN}, cfg.ShardDSNs...) {
		if err := createDatabase(ctx, dsn); err != nil {
			return err
		}
	}
	store, err := couponmysql.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	return store.Migrate(ctx)
}

func createDatabase(ctx context.Context, dsn string) error {
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("parse dsn: %w", err)
	}
	name := c.DBName
	if name == "" || strings.ContainsAny(name, "`") {
		return fmt.Errorf("dsn %q names no usable database", dsn)
	}
	c.DBName = ""
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+name+"` CHARACTER SET utf8mb4"); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}
