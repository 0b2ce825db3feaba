// Package app assembles the coupon service from its configuration: the
// stores, the domain service and the gRPC and ops servers. cmd/coupon and
// integration tests both build the service through it.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/gateway"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponredis "github.com/opencoupon/coupon/participant/redis"
	"github.com/opencoupon/coupon/participant/rpc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Config is the whole service configuration.
type Config struct {
	GRPCAddr string
	OpsAddr  string
	NodeID   int64
	// DefaultDeadline applies to calls that arrive without one.
	DefaultDeadline time.Duration
	RateLimit       RateLimit
	MySQL           couponmysql.Config
	Redis           RedisConfig
	Service         participant.Config
	// Now is the service's clock; nil means time.Now. Tests inject one.
	Now func() time.Time

	// HTTP is the JSON API and console listener (internal/gateway).
	HTTP gateway.Config
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
}

// NewRedis connects to Redis as configured.
func NewRedis(c RedisConfig) goredis.UniversalClient {
	opts := &goredis.UniversalOptions{
		Addrs: c.Addrs, Password: c.Password, DB: c.DB, PoolSize: c.PoolSize,
		DialTimeout: 2 * time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		// No automatic re-sends: a command whose reply timed out may have
		// run. The adapter's scripts are idempotent besides (a cluster
		// client still re-sends on MOVED/ASK and after connection errors).
		MaxRetries: -1,
	}
	if c.Cluster || len(c.Addrs) > 1 {
		opts.IsClusterMode = true
	}
	return goredis.NewUniversalClient(opts)
}

// App is a running coupon service.
type App struct {
	cfg     Config
	log     *slog.Logger
	store   *couponmysql.Store
	rdb     goredis.UniversalClient
	redis   *couponredis.Adapter
	svc     *participant.Service
	grpc    *grpc.Server
	health  *health.Server
	opsHTTP *http.Server
}

// Open connects to MySQL and Redis and builds the servers.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	store, err := couponmysql.Open(ctx, cfg.MySQL)
	if err != nil {
		return nil, err
	}
	if err := store.VerifyShardMap(ctx); err != nil {
		store.Close()
		return nil, err
	}
	rdb := NewRedis(cfg.Redis)
	if err := rdb.Ping(ctx).Err(); err != nil {
		store.Close()
		return nil, fmt.Errorf("ping redis %v: %w", cfg.Redis.Addrs, err)
	}
	ids, err := participant.NewIDGen(cfg.NodeID, nil)
	if err != nil {
		store.Close()
		rdb.Close()
		return nil, err
	}
	r := couponredis.New(rdb, cfg.Redis.Prefix)
	svc, err := participant.NewService(participant.Deps{
		Catalog: store, Coupons: store, Branches: store, Phones: store,
		Stock: r.Stock, Requests: r.Requests, Leases: r.Leases, Blobs: r.Blobs, IDs: ids, Log: log, Now: cfg.Now,
	}, cfg.Service)
	if err != nil {
		store.Close()
		rdb.Close()
		return nil, err
	}
	a := &App{cfg: cfg, log: log, store: store, rdb: rdb, redis: r, svc: svc, health: health.NewServer()}
	lim := &limiter{cfg: cfg.RateLimit, m: map[string]*rate.Limiter{}}
	a.grpc = grpc.NewServer(grpc.ChainUnaryInterceptor(a.recoverer, lim.unary, a.deadline, rpc.UnaryErrors(log)))
	couponv1.RegisterAdminServiceServer(a.grpc, rpc.NewAdmin(svc, log))
	couponv1.RegisterCouponServiceServer(a.grpc, rpc.NewCoupons(svc, log))
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)
	return a, nil
}

// Service is the domain service.
func (a *App) Service() *participant.Service { return a.svc }

// Store is the MySQL store.
func (a *App) Store() *couponmysql.Store { return a.store }

// Redis is the Redis client.
func (a *App) Redis() goredis.UniversalClient { return a.rdb }

// Close releases the connections.
func (a *App) Close() error {
	err := a.store.Close() // drains the claim batches first
	a.redis.Close()
	return errors.Join(err, a.rdb.Close())
}

func (a *App) recoverer(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			a.log.ErrorContext(ctx, "panic", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return h(ctx, req)
}

func (a *App) deadline(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if _, ok := ctx.Deadline(); !ok && a.cfg.DefaultDeadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.DefaultDeadline)
		defer cancel()
	}
	return h(ctx, req)
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
		// The JSON API and the console call the service through its own
		// gRPC listener, so they pass the same interceptors.
		web, err := gateway.Start(ctx, a.cfg.HTTP, gateway.Deps{GRPCTarget: lis.Addr().String(), Log: a.log})
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

// ServeListeners serves gRPC on lis and the ops HTTP endpoints on ops (if
// not nil) until ctx is done.
func (a *App) ServeListeners(ctx context.Context, lis, ops net.Listener) error {
	errc := make(chan error, 2)
	if ops != nil {
		a.opsHTTP = &http.Server{Handler: a.opsMux(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := a.opsHTTP.Serve(ops); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("ops http: %w", err)
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
	var jobs sync.WaitGroup
	jobs.Go(func() { participant.NewSweeper(a.svc, a.store).Run(jctx) })
	jobs.Go(func() { participant.NewAuditor(a.svc).Run(jctx) })
	defer jobs.Wait()
	defer stopJobs()
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	a.log.Info("coupon service serving", "grpc", lis.Addr().String(), "ops", addrOf(ops))
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	a.health.Shutdown()
	stopped := make(chan struct{})
	go func() { a.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		a.grpc.Stop()
	}
	if a.opsHTTP != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.opsHTTP.Shutdown(sctx)
	}
	return err
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

func (a *App) opsMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.store.Main().PingContext(ctx); err != nil {
			http.Error(w, "mysql: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := a.rdb.Ping(ctx).Err(); err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
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
