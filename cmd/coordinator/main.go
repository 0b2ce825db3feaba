// Command coordinator runs the DTM transaction coordinator of the coupon
// service (see package coordinator).
//
//	coordinator [serve] [--config deploy/local/coordinator.yaml] [--migrate]
//	coordinator migrate [--config deploy/local/coordinator.yaml]
//
// migrate (or serve --migrate) creates the MySQL store database and tables
// if they are missing. Every config key can be set by environment as
// COUPON_COORDINATOR_<KEY>, with '.' as '_', e.g. COUPON_COORDINATOR_STORE_HOST.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/viper"

	"github.com/opencoupon/coupon/coordinator"

	_ "github.com/opencoupon/coupon/internal/dtmlevel" // before the DTM logger reads LOG_LEVEL
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	const usage = "usage: coordinator [serve|migrate] [--config FILE] [--migrate]"
	if cmd != "serve" && cmd != "migrate" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("coordinator "+cmd, flag.ContinueOnError)
	configFile := fs.String("config", "", "YAML config file; environment COUPON_COORDINATOR_* overrides it")
	migrate := fs.Bool("migrate", false, "create the MySQL store's database and tables before serving (as the migrate command does)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	v, err := loadConfig(*configFile)
	if err != nil {
		return err
	}
	cfg, err := config(v)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd == "migrate" || *migrate {
		if err := coordinator.Migrate(ctx, cfg.Store); err != nil {
			return err
		}
		log.Info("migrated dtm store", "database", cfg.Store.DB)
		if cmd == "migrate" {
			return nil
		}
	}
	return coordinator.Run(ctx, cfg, log)
}

func loadConfig(file string) (*viper.Viper, error) {
	d := coordinator.DefaultConfig()
	v := viper.New()
	v.SetDefault("http.addr", d.HTTPAddr)
	v.SetDefault("grpc.addr", d.GRPCAddr)
	v.SetDefault("log.level", d.LogLevel.String())
	v.SetDefault("retry_interval", d.RetryInterval)
	v.SetDefault("timeout_to_fail", d.TimeoutToFail)
	v.SetDefault("request_timeout", d.RequestTimeout)
	v.SetDefault("cron.interval", d.CronInterval)
	v.SetDefault("cron.workers", d.CronWorkers)
	v.SetDefault("branch.update_sync", d.UpdateBranchSync)
	v.SetDefault("branch.flushers", d.BranchFlushers)
	v.SetDefault("transient_retries", d.TransientRetries)
	v.SetDefault("shutdown.timeout", d.ShutdownTimeout)
	v.SetDefault("store.driver", d.Store.Driver)
	v.SetDefault("store.host", d.Store.Host)
	v.SetDefault("store.port", d.Store.Port)
	v.SetDefault("store.user", d.Store.User)
	v.SetDefault("store.password", d.Store.Password)
	v.SetDefault("store.db", d.Store.DB)
	v.SetDefault("store.isolation", d.Store.Isolation)
	v.SetDefault("store.max_open_conns", d.Store.MaxOpenConns)
	v.SetDefault("store.max_idle_conns", d.Store.MaxIdleConns)
	v.SetDefault("store.conn_max_lifetime", d.Store.ConnMaxLifetime)
	v.SetDefault("store.redis_prefix", d.Store.RedisPrefix)
	v.SetDefault("store.data_expire", d.Store.DataExpire)
	v.SetDefault("store.finished_data_expire", d.Store.FinishedDataExpire)
	v.SetEnvPrefix("COUPON_COORDINATOR")
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

func config(v *viper.Viper) (coordinator.Config, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.GetString("log.level"))); err != nil {
		return coordinator.Config{}, fmt.Errorf("log.level: %w", err)
	}
	return coordinator.Config{
		Store: coordinator.StoreConfig{
			Driver:             v.GetString("store.driver"),
			Host:               v.GetString("store.host"),
			Port:               v.GetInt("store.port"),
			User:               v.GetString("store.user"),
			Password:           v.GetString("store.password"),
			DB:                 v.GetString("store.db"),
			Isolation:          v.GetString("store.isolation"),
			MaxOpenConns:       v.GetInt("store.max_open_conns"),
			MaxIdleConns:       v.GetInt("store.max_idle_conns"),
			ConnMaxLifetime:    v.GetDuration("store.conn_max_lifetime"),
			RedisPrefix:        v.GetString("store.redis_prefix"),
			DataExpire:         v.GetDuration("store.data_expire"),
			FinishedDataExpire: v.GetDuration("store.finished_data_expire"),
		},
		HTTPAddr:         v.GetString("http.addr"),
		GRPCAddr:         v.GetString("grpc.addr"),
		LogLevel:         level,
		RetryInterval:    v.GetDuration("retry_interval"),
		TimeoutToFail:    v.GetDuration("timeout_to_fail"),
		RequestTimeout:   v.GetDuration("request_timeout"),
		CronInterval:     v.GetDuration("cron.interval"),
		CronWorkers:      v.GetInt("cron.workers"),
		UpdateBranchSync: v.GetBool("branch.update_sync"),
		BranchFlushers:   v.GetInt("branch.flushers"),
		TransientRetries: v.GetInt("transient_retries"),
		ShutdownTimeout:  v.GetDuration("shutdown.timeout"),
	}, nil
}
