// Command coupon runs the coupon service and its operator tools.
//
//	coupon serve   [--config FILE]   serve gRPC and the ops HTTP endpoints
//	coupon migrate [--config FILE]   create the databases and apply migrations
//	coupon demo    [--addr ADDR]     run the scripted demo against a running service
//	coupon bench   NAME [flags]      run a benchmark (see internal/bench)
//
// Each subcommand lives in its own file and registers itself in commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/opencoupon/coupon/internal/app"

	_ "github.com/opencoupon/coupon/internal/dtmlevel" // before the DTM logger reads LOG_LEVEL
)

// command is one subcommand: what it is for (one line for usage) and what runs it.
type command struct {
	usage string
	run   func(ctx context.Context, args []string) error
}

// commands maps a subcommand's name to it; files add theirs from init.
var commands = map[string]command{
	"serve":   {"serve   --config FILE   serve the coupon gRPC API and ops HTTP", serve},
	"migrate": {"migrate --config FILE   create databases and apply migrations (idempotent)", migrate},
	"demo":    {"demo    --addr ADDR     run the scripted demo against a running service", demo},
	"bench":   {"bench   NAME [flags]    run a benchmark (make bench runs them)", bench},
}

// exitError ends the process with a chosen status (a command's documented
// exit codes, e.g. 1 for findings and 2 for an error).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode makes err end the process with code.
func exitCode(code int, err error) error { return &exitError{code: code, err: err} }

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	cmd, ok := commands[name]
	if !ok {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cmd.run(ctx, args)
	stop()
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if ee == nil || ee.err != nil && ee.err.Error() != "" {
		fmt.Fprintf(os.Stderr, "coupon %s: %v\n", name, err)
	}
	os.Exit(code)
}

func usage() {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(os.Stderr, "usage: coupon <command> [flags]")
	for _, n := range names {
		fmt.Fprintln(os.Stderr, "  "+commands[n].usage)
	}
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
