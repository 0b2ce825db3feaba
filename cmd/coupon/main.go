// Command coupon is the coupon server: it serves, migrates and reconciles.
//
//	coupon serve     [--config FILE]         serve gRPC and the ops HTTP endpoints
//	coupon migrate   [--config FILE]         create the databases and apply migrations
//	coupon reconcile run|schedule|runs ...   three-way match of orders, payments and coupons
//
// The lab tools (benchmarks, the chaos run, the demo) are cmd/couponlab, so
// that this binary links none of them (TestServerLinksNoLab keeps it so).
package main

import (
	"context"
	"flag"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/cli"

	_ "github.com/opencoupon/coupon/internal/dtmlevel" // before the DTM logger reads LOG_LEVEL
)

// commands maps a subcommand's name to it.
var commands = map[string]cli.Command{
	"serve":     {Usage: "serve   --config FILE   serve the coupon gRPC API and ops HTTP", Run: serve},
	"migrate":   {Usage: "migrate --config FILE   create databases and apply migrations (idempotent)", Run: migrate},
	"reconcile": {Usage: "reconcile run|schedule|runs   three-way match of orders, payments and the coupon ledger (exit 0 clean, 1 findings, 2 error)", Run: reconcileCmd},
}

func main() { cli.Main("coupon", commands) }

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
	log := cli.NewLogger(level)
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
	cli.NewLogger(level).Info("migrated", "main", 1, "shards", len(cfg.MySQL.ShardDSNs), "tables_per_shard", cfg.MySQL.TablesPerShard)
	return nil
}
