// Command coupon runs the coupon service and its operator tools.
//
//	coupon serve   [--config FILE]   serve gRPC and the ops HTTP endpoints
//	coupon migrate [--config FILE]   create the databases and apply migrations
//	coupon demo    [--addr ADDR]     run the scripted demo against a running service
//	coupon bench   claim|tcc [flags] run a benchmark (see internal/bench)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/opencoupon/coupon/internal/app"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args)
	case "migrate":
		err = migrate(ctx, args)
	case "demo":
		err = demo(ctx, args)
	case "bench":
		err = bench(ctx, args)
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "coupon %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: coupon <serve|migrate|demo|bench> [flags]
  serve   --config FILE   serve the coupon gRPC API and ops HTTP
  migrate --config FILE   create databases and apply migrations (idempotent)
  demo    --addr ADDR     run the scripted demo against a running service
  bench   claim|tcc       run a benchmark (make bench runs both)`)
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func configFlag(name string, args []string) (string, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	file := fs.String("config", "", "YAML config file (COUPON_* environment variables override it)")
	err := fs.Parse(args)
	return *file, fs, err
}

func serve(ctx context.Context, args []string) error {
	file, _, err := configFlag("serve", args)
	if err != nil {
		return err
	}
	cfg, level, err := loadConfig(file)
	if err != nil {
		return err
	}
	log := newLogger(level)
	a, err := app.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Serve(ctx)
}

func migrate(ctx context.Context, args []string) error {
	file, _, err := configFlag("migrate", args)
	if err != nil {
		return err
	}
	cfg, level, err := loadConfig(file)
	if err != nil {
		return err
	}
	if err := app.Migrate(ctx, cfg.MySQL); err != nil {
		return err
	}
	newLogger(level).Info("migrated", "main", 1, "shards", len(cfg.MySQL.ShardDSNs), "tables_per_shard", cfg.MySQL.TablesPerShard)
	return nil
}
