package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/opencoupon/coupon/internal/metrics"
	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// maxStockTemplates bounds the remaining-stock series: beyond it the
// listing stops (the dashboard shows the first active templates by ID).
const maxStockTemplates = 1000

// services are the gRPC health service names that follow readiness ("" is
// the server as a whole).
var services = []string{"", couponv1.CouponService_ServiceDesc.ServiceName, couponv1.AdminService_ServiceDesc.ServiceName}

func (a *App) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, s := range services {
		a.health.SetServingStatus(s, st)
	}
	a.metrics.SetReady(ok)
}

// checkReady pings the main database, every shard database and Redis, all
// at once, and reports what is unreachable.
func (a *App) checkReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// The stores ping every database at once and name the ones that fail.
	var mysqlErr, redisErr error
	var wg sync.WaitGroup
	wg.Go(func() { mysqlErr = a.store.Ping(ctx) })
	wg.Go(func() {
		if err := a.rdb.Ping(ctx).Err(); err != nil {
			redisErr = fmt.Errorf("redis: %w", err)
		}
	})
	wg.Wait()
	return errors.Join(mysqlErr, redisErr)
}

// watchReadiness keeps the gRPC health status in step with checkReady
// until ctx ends.
func (a *App) watchReadiness(ctx context.Context) {
	every := orDefault(a.cfg.ReadinessInterval, DefaultReadinessInterval)
	was := false
	for {
		err := a.checkReady(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			// Request buckets born now, not at their first claim: the
			// sold-out refusals of templates created from now on need no
			// replay read (see Requests.Touch). Best effort: a bucket not
			// touched is born at its first marker as before.
			if terr := a.redis.Requests.Touch(ctx); terr != nil && ctx.Err() == nil {
				a.log.Debug("touch request buckets", "err", terr)
			}
		}
		if ok := err == nil; ok != was {
			if ok {
				a.log.Info("ready: every database and Redis reachable")
			} else {
				a.log.Warn("not ready", "err", err)
			}
			a.setServing(ok)
			was = ok
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (a *App) opsMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := a.checkReady(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", a.metrics.Handler())
	return mux
}

// Pprof serves net/http/pprof on a listener of its own, never on the ops
// port that Prometheus scrapes: profiles show the service's internals and
// a long one costs CPU, so they are opt-in and reachable only by name from
// the machine itself by default.
type Pprof struct {
	// Addr is where pprof listens (config pprof.addr); empty: off.
	Addr string
	// Hosts are the Host header names accepted (any port); others are
	// refused, so a page in an operator's browser cannot reach pprof by
	// DNS rebinding. Default localhost, 127.0.0.1 and ::1.
	Hosts []string
	// WriteTimeout bounds a response: a profile or trace asked for longer
	// is refused (default 60s).
	WriteTimeout time.Duration
}

// DefaultPprofHosts are the Host names pprof answers when none are
// configured: the loopback names only.
func DefaultPprofHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// pprofServer is the pprof listener's server.
func (a *App) pprofServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hosts := a.cfg.Pprof.Hosts
	if len(hosts) == 0 {
		hosts = DefaultPprofHosts()
	}
	allowed := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		allowed[strings.ToLower(strings.Trim(h, "[]"))] = true
	}
	wt := orDefault(a.cfg.Pprof.WriteTimeout, DefaultPprofWriteTimeout)
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !allowed[hostName(r.Host)] {
				a.log.Warn("pprof: request with a foreign Host refused", "host", r.Host, "remote", r.RemoteAddr)
				http.Error(w, "host not allowed", http.StatusForbidden)
				return
			}
			// net/http/pprof extends its write deadline by the seconds
			// asked for, so the bound is checked here, for the CPU profile,
			// the trace and the delta profiles alike.
			if sec, err := strconv.ParseFloat(r.FormValue("seconds"), 64); err == nil && sec > wt.Seconds() {
				http.Error(w, fmt.Sprintf("seconds=%s exceeds pprof.write_timeout %s", r.FormValue("seconds"), wt), http.StatusBadRequest)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      wt,
		IdleTimeout:       DefaultOpsIdleTimeout,
	}
}

// hostName is the lower-case name of a Host header, without its port.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.Trim(host, "[]"))
}

// metricSources tells the metrics where the service's state is.
func (a *App) metricSources() metrics.Sources {
	return metrics.Sources{
		Service: a.svc.Stats,
		Jobs: map[string]func() time.Time{
			"expiry_sweep": func() time.Time { return a.sweeper.Stats().LastRound },
			"stock_audit":  func() time.Time { return a.auditor.Stats().LastRound },
		},
		Pools:         a.store.PoolCollectors(),
		Redis:         func() *goredis.PoolStats { return a.rdb.PoolStats() },
		Stock:         a.remainingStock,
		StockRefresh:  orDefault(a.cfg.StockMetricsRefresh, DefaultStockMetricsRefresh),
		Locked:        a.lockedCoupons,
		LockedRefresh: 30 * time.Second,
		Now:           a.cfg.Now,
	}
}

// remainingStock reads the Redis counters of the active templates.
// Templates whose counters are missing (being rebuilt) are left out.
func (a *App) remainingStock(ctx context.Context) ([]metrics.TemplateStock, error) {
	var out []metrics.TemplateStock
	page := participant.Page{Size: 500}
	for len(out) < maxStockTemplates {
		ts, next, err := a.svc.ListTemplates(ctx, 0, participant.TemplateActive, page)
		if err != nil {
			return nil, err
		}
		for _, t := range ts {
			n, ok, err := a.redis.Stock.Remaining(ctx, t.ID, t.SubStockCount)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, metrics.TemplateStock{TemplateID: t.ID, Remaining: n})
			}
		}
		if next == "" {
			break
		}
		page.After = next
	}
	return out, nil
}

// lockedCoupons counts LOCKED coupons, and those locked longer than the
// stuck threshold (a lock that old outlives any transaction's timeout).
func (a *App) lockedCoupons(ctx context.Context) (locked, stuck int64, err error) {
	now := time.Now
	if a.cfg.Now != nil {
		now = a.cfg.Now
	}
	return a.store.Coupons.LockedCoupons(ctx, now().Add(-orDefault(a.cfg.StuckLockedAfter, DefaultStuckLockedAfter)))
}
