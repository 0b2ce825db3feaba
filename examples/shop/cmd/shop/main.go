// Command shop runs the sample shop (order and payment services, one gRPC
// server) that places orders as DTM TCC transactions or Sagas enlisting
// coupons, and refunds them through DTM 2-phase messages.
//
//	shop migrate --config deploy/local/shop.yaml
//	shop serve --config deploy/local/shop.yaml
//
// Every config key can be set by environment as COUPON_SHOP_<KEY>, with '.'
// as '_', e.g. COUPON_SHOP_DTM_GRPC.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dtm-labs/logger"
	"github.com/spf13/viper"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/examples/shop"
	"github.com/opencoupon/coupon/internal/janitor"

	_ "github.com/opencoupon/coupon/internal/dtmlevel" // before the DTM logger reads LOG_LEVEL
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || (args[0] != "serve" && args[0] != "migrate") {
		return errors.New("usage: shop serve|migrate [--config FILE]")
	}
	fs := flag.NewFlagSet("shop "+args[0], flag.ContinueOnError)
	configFile := fs.String("config", "", "YAML config file; environment COUPON_SHOP_* overrides it")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	v, err := loadConfig(*configFile)
	if err != nil {
		return err
	}
	log, err := newLogger(v.GetString("log.level"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if args[0] == "migrate" {
		return migrate(ctx, log, v)
	}
	return serve(ctx, log, v)
}

func loadConfig(file string) (*viper.Viper, error) {
	v := viper.New()
	v.SetDefault("log.level", "info")
	v.SetDefault("grpc.addr", "127.0.0.1:9190")
	v.SetDefault("grpc.advertise", "127.0.0.1:9190")
	v.SetDefault("ops.addr", "127.0.0.1:9191")
	v.SetDefault("dtm.grpc", "127.0.0.1:36790")
	v.SetDefault("dtm.http", "127.0.0.1:36789")
	v.SetDefault("coupon.target", "127.0.0.1:9090")
	v.SetDefault("coupon.token", "")
	v.SetDefault("coupon.identity", "shop")
	v.SetDefault("coupon.branch_keys", []any{})
	v.SetDefault("coupon.branch_ttl", branchcred.DefaultTTL.String())
	v.SetDefault("payment.target", "127.0.0.1:9190")
	v.SetDefault("order.dsn", "root@tcp(127.0.0.1:3306)/shop_order?parseTime=true&loc=UTC&interpolateParams=true")
	v.SetDefault("payment.dsn", "root@tcp(127.0.0.1:3306)/shop_payment?parseTime=true&loc=UTC&interpolateParams=true")
	v.SetDefault("db.max_conns", 10)
	v.SetDefault("order.timeout", "10s")
	v.SetDefault("order.sweep_interval", "1m")
	v.SetDefault("shutdown.timeout", "10s")
	v.SetDefault("barrier.interval", "1h")
	v.SetDefault("barrier.retention", janitor.DefaultRetention.String())
	v.SetDefault("barrier.max_age", janitor.DefaultMaxAge.String())
	v.SetDefault("barrier.batch", janitor.DefaultBatch)
	v.SetDefault("barrier.unknown_finished", false)
	v.SetEnvPrefix("COUPON_SHOP")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
	}
	return v, nil
}

// branchSigner signs with the first of coupon.branch_keys (the others are
// there for the coupon service's side of a rotation). With a coupon token
// configured a key is required: without one DTM could not confirm the
// coupon of any order.
func branchSigner(v *viper.Viper) (coupontcc.Signer, error) {
	var keys []branchcred.Key
	if raw, ok := v.Get("coupon.branch_keys").(string); ok {
		// From the environment: COUPON_SHOP_COUPON_BRANCH_KEYS='[{"id":…,"secret":…}]'.
		if strings.TrimSpace(raw) != "" {
			if err := json.Unmarshal([]byte(raw), &keys); err != nil {
				return coupontcc.Signer{}, fmt.Errorf("coupon.branch_keys: %w", err)
			}
		}
	} else if err := v.UnmarshalKey("coupon.branch_keys", &keys); err != nil {
		return coupontcc.Signer{}, fmt.Errorf("coupon.branch_keys: %w", err)
	}
	s := coupontcc.Signer{Caller: v.GetString("coupon.identity"), TTL: v.GetDuration("coupon.branch_ttl")}
	if v.GetString("coupon.token") == "" {
		return s, nil
	}
	if len(keys) == 0 {
		return s, errors.New("coupon.branch_keys: a key is required with coupon.token (the coupon service verifies DTM's calls with it)")
	}
	if s.TTL < 24*time.Hour {
		return s, fmt.Errorf("coupon.branch_ttl %s: under a day, DTM's retries of a Confirm or Cancel would outlive it", s.TTL)
	}
	for _, k := range keys {
		if err := k.Check(); err != nil {
			return s, fmt.Errorf("coupon.branch_keys: %w", err)
		}
	}
	s.Key = keys[0]
	return s, nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	// The DTM client logs every call at info and refusals at error; route
	// it through slog one level down.
	logger.WithLogger(dtmLogger{log})
	return log, nil
}

func migrate(ctx context.Context, log *slog.Logger, v *viper.Viper) error {
	for role, key := range map[string]string{shop.OrderDB: "order.dsn", shop.PaymentDB: "payment.dsn"} {
		if err := shop.Migrate(ctx, v.GetString(key), role); err != nil {
			return err
		}
		log.Info("migrated", "database", role)
	}
	return nil
}

func serve(ctx context.Context, log *slog.Logger, v *viper.Viper) error {
	orderDB, err := shop.Open(ctx, v.GetString("order.dsn"), v.GetInt("db.max_conns"))
	if err != nil {
		return fmt.Errorf("order database: %w", err)
	}
	defer orderDB.Close()
	paymentDB, err := shop.Open(ctx, v.GetString("payment.dsn"), v.GetInt("db.max_conns"))
	if err != nil {
		return fmt.Errorf("payment database: %w", err)
	}
	defer paymentDB.Close()

	branch, err := branchSigner(v)
	if err != nil {
		return err
	}
	timeout := v.GetDuration("order.timeout")
	orders := shop.NewOrderServer(orderDB, shop.OrderConfig{
		DTM:     v.GetString("dtm.grpc"),
		Coupon:  v.GetString("coupon.target"),
		Token:   v.GetString("coupon.token"),
		Branch:  branch,
		Payment: v.GetString("payment.target"),
		Self:    v.GetString("grpc.advertise"),
		Timeout: timeout,
	}, log)
	defer orders.Close()
	barriers, err := janitor.New(janitor.Config{
		Retention:       v.GetDuration("barrier.retention"),
		MaxAge:          v.GetDuration("barrier.max_age"),
		Batch:           v.GetInt("barrier.batch"),
		Coordinator:     v.GetString("dtm.http"),
		UnknownFinished: v.GetBool("barrier.unknown_finished"),
	}, orderDB, paymentDB)
	if err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	gs := shop.NewGRPCServer(log, orders, shop.NewPaymentServer(paymentDB))
	lis, err := net.Listen("tcp", v.GetString("grpc.addr"))
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		for name, db := range map[string]*sql.DB{"order": orderDB, "payment": paymentDB} {
			if err := db.PingContext(r.Context()); err != nil {
				http.Error(w, name+" database: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	ops := &http.Server{Addr: v.GetString("ops.addr"), Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(lis) }()
	go func() { errc <- ops.ListenAndServe() }()
	go sweep(ctx, log, orders, v.GetDuration("order.sweep_interval"), 3*timeout)
	go cleanBarriers(ctx, log, orderDB, barriers, v.GetDuration("barrier.interval"))
	log.Info("shop serving", "grpc", lis.Addr().String(), "ops", ops.Addr, "dtm", v.GetString("dtm.grpc"), "coupon", v.GetString("coupon.target"))

	select {
	case err = <-errc:
		err = fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
		log.Info("shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), v.GetDuration("shutdown.timeout"))
	defer cancel()
	_ = ops.Shutdown(sctx)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-sctx.Done():
		gs.Stop()
	}
	return err
}

// sweep cancels abandoned orders every interval until ctx ends.
func sweep(ctx context.Context, log *slog.Logger, orders *shop.OrderServer, interval, age time.Duration) {
	every(ctx, interval, func(now time.Time) {
		n, err := orders.Sweep(ctx, now.Add(-age))
		if err != nil {
			log.Error("sweep orders", "err", err)
		} else if n > 0 {
			log.Warn("cancelled abandoned orders", "count", n)
		}
	})
}

// cleanBarriers runs the barrier janitor over both databases every
// interval until ctx ends, on one replica at a time (shop.CleanBarriers).
func cleanBarriers(ctx context.Context, log *slog.Logger, lockDB *sql.DB, j *janitor.Janitor, interval time.Duration) {
	every(ctx, interval, func(time.Time) {
		st, ran, err := shop.CleanBarriers(ctx, lockDB, j)
		switch {
		case err != nil:
			log.Error("clean barrier tables", "err", err, "deleted", st.Deleted)
		case ran:
			log.Info("cleaned barrier tables", "deleted", st.Deleted, "deleted_finished", st.DeletedFinished,
				"deleted_expired", st.DeletedExpired, "kept", st.Kept, "kept_unknown", st.KeptUnknown, "kept_past_max_age", st.KeptPastMaxAge, "oldest_age", st.OldestAge.String())
		}
	})
}

// every runs job every interval until ctx ends; never when interval is 0.
func every(ctx context.Context, interval time.Duration, job func(now time.Time)) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			job(now)
		}
	}
}

// dtmLogger adapts slog to the DTM client's logger, one level down: its
// info is per-call tracing and its errors include expected refusals.
type dtmLogger struct{ log *slog.Logger }

func (l dtmLogger) Debugf(format string, args ...any) {}
func (l dtmLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args) }
func (l dtmLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelInfo, format, args) }
func (l dtmLogger) Errorf(format string, args ...any) { l.logf(slog.LevelWarn, format, args) }

func (l dtmLogger) logf(level slog.Level, format string, args []any) {
	if ctx := context.Background(); l.log.Enabled(ctx, level) {
		l.log.Log(ctx, level, fmt.Sprintf(format, args...), "component", "dtm")
	}
}
