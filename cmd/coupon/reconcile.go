package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/opencoupon/coupon/internal/cli"
	"github.com/opencoupon/coupon/internal/config"
	"github.com/opencoupon/coupon/reconcile"
)

const reconcileUsage = `usage:
  coupon reconcile run --date YYYY-MM-DD [--config FILE] [--orders F --payments F --coupons F] [--out DIR]
                       [--as-of RFC3339] [--repair [--apply]] [flags]
  coupon reconcile schedule [--config FILE]     run every day on reconcile.schedule, one replica per day
  coupon reconcile runs [--config FILE] [--limit N]   list recorded runs, newest first`

func reconcileCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return cli.Exit(2, errors.New(reconcileUsage))
	}
	var err error
	switch args[0] {
	case "run":
		return reconcileRun(ctx, args[1:])
	case "schedule":
		err = reconcileSchedule(ctx, args[1:])
	case "runs":
		err = reconcileRuns(ctx, args[1:])
	default:
		err = errors.New(reconcileUsage)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return cli.Exit(2, err)
	}
	return err
}

// reconcileConfig is the reconcile.* keys with the service config they lean on.
type reconcileConfig struct {
	config.Reconcile
	mainDSN   string
	shardDSNs []string
	level     string
}

// loadReconcileConfig reads the reconcile.* keys with the coupon service's
// (shards, main DSN, gRPC address) from the same file and COUPON_*
// environment.
func loadReconcileConfig(file string) (*reconcileConfig, error) {
	c, err := config.Load(file)
	if err != nil {
		return nil, err
	}
	return &reconcileConfig{Reconcile: c.Reconcile, mainDSN: c.App.MySQL.MainDSN, shardDSNs: c.App.MySQL.ShardDSNs, level: c.LogLevel}, nil
}

// stateDSN is reconcile.state_dsn, the coupon main database by default;
// "none" runs without state.
func (c *reconcileConfig) stateDSN() string {
	if s := c.StateDSN; s != "" {
		return s
	}
	return c.mainDSN
}

func (c *reconcileConfig) zone() (*time.Location, error) {
	z, err := time.LoadLocation(c.Zone)
	if err != nil {
		return nil, fmt.Errorf("reconcile.zone: %w", err)
	}
	return z, nil
}

// checkGrace enforces the grace window's reason to exist: a transaction
// still inside it may yet be settled by DTM.
func (c *reconcileConfig) checkGrace(grace time.Duration) error {
	ttf, budget := c.DTMTimeoutToFail, c.DTMRetryBudget
	if grace <= ttf+budget {
		return fmt.Errorf("grace %s must exceed DTM's TimeoutToFail %s plus its retry budget %s (reconcile.dtm_timeout_to_fail, reconcile.dtm_retry_budget)", grace, ttf, budget)
	}
	return nil
}

func (c *reconcileConfig) memoryLimit() {
	if n := c.MemoryLimit; n > 0 {
		debug.SetMemoryLimit(int64(n))
	}
}

// mysqlSources opens the shop's orders and payments and every coupon shard.
func (c *reconcileConfig) mysqlSources(ctx context.Context) (reconcile.Sources, string, error) {
	var src reconcile.Sources
	orders, err := reconcile.OpenSource(ctx, c.OrdersDSN)
	if err != nil {
		return src, "", fmt.Errorf("orders database (reconcile.orders_dsn): %w", err)
	}
	src.Orders = reconcile.MySQLOrders{DB: orders}
	payments, err := reconcile.OpenSource(ctx, c.PaymentsDSN)
	if err != nil {
		src.Close()
		return reconcile.Sources{}, "", fmt.Errorf("payments database (reconcile.payments_dsn): %w", err)
	}
	src.Payments = reconcile.MySQLPayments{DB: payments}
	var shards []*sql.DB
	for i, dsn := range c.shardDSNs {
		db, err := reconcile.OpenSource(ctx, dsn)
		if err != nil {
			src.Close()
			reconcile.Sources{Ledger: reconcile.MySQLLedger{Shards: shards}}.Close()
			return reconcile.Sources{}, "", fmt.Errorf("coupon shard %d (mysql.shard_dsns): %w", i, err)
		}
		shards = append(shards, db)
	}
	src.Ledger = reconcile.MySQLLedger{Shards: shards}
	names := append([]string{c.OrdersDSN, c.PaymentsDSN}, c.shardDSNs...)
	return src, reconcile.SourceKey("mysql", names...), nil
}

// repairer builds the repairer and the gRPC connection it uses.
func (c *reconcileConfig) repairer(state *sql.DB, apply bool, token string, grace time.Duration) (*reconcile.Repairer, io.Closer, error) {
	conn, err := grpc.NewClient(c.CouponAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("coupon service (reconcile.coupon_addr): %w", err)
	}
	if token == "" {
		token = c.CouponToken
	}
	return &reconcile.Repairer{
		State: state, Apply: apply, Grace: grace,
		TimeoutToFail: c.DTMTimeoutToFail,
		DTM:           reconcile.DTMHTTP{Addr: c.DTMHTTP},
		Coupons:       reconcile.CouponGRPC{Conn: conn, Token: token, DTM: c.DTMGRPC},
	}, conn, nil
}

func hostID() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", h, os.Getpid())
}

func reconcileRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("reconcile run", flag.ContinueOnError)
	file := fs.String("config", "", "YAML config file (the coupon service's; reconcile.* keys; COUPON_* environment overrides)")
	date := fs.String("date", "", "the day to reconcile, YYYY-MM-DD in reconcile.zone (required)")
	asOf := fs.String("as-of", "", "judge the books at this RFC 3339 time (default: the end of the day)")
	zone := fs.String("zone", "", "time zone of the day (default reconcile.zone, UTC)")
	grace := fs.Duration("grace", 0, "in-flight window before as-of (default reconcile.grace, 10m)")
	orders := fs.String("orders", "", "orders CSV (with --payments and --coupons: read CSV instead of MySQL)")
	payments := fs.String("payments", "", "payments CSV")
	couponsCSV := fs.String("coupons", "", "coupon ledger CSV")
	out := fs.String("out", "", "output directory (default reconcile.out_dir/DATE)")
	pending := fs.String("pending", "", "previous run's pending.jsonl to re-check (default: from the state database)")
	stateDSN := fs.String("state-dsn", "", `state database DSN (default reconcile.state_dsn, else mysql.main_dsn; "none": no state)`)
	repair := fs.Bool("repair", false, "plan repairs of the findings and print them (a dry run unless --apply)")
	apply := fs.Bool("apply", false, "with --repair: apply the safe repairs and record them in reconcile_repair")
	token := fs.String("token", "", "bearer token for the coupon service (default reconcile.coupon_token)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Exit(2, err)
	}
	res, err := runReconcile(ctx, runFlags{
		file: *file, date: *date, asOf: *asOf, zone: *zone, grace: *grace, orders: *orders, payments: *payments, coupons: *couponsCSV,
		out: *out, pending: *pending, stateDSN: *stateDSN, repair: *repair, apply: *apply, token: *token,
	}, os.Stdout)
	if err != nil {
		return cli.Exit(2, err)
	}
	if res.RepairErr != nil {
		return cli.Exit(2, res.RepairErr)
	}
	if res.Open > 0 {
		return cli.Exit(1, fmt.Errorf("%d open findings, %s at risk (minor units); see %s", res.Open, reconcile.Money(res.MoneyAtRisk), filepath.Dir(res.Run.ReportPath)))
	}
	return nil
}

type runFlags struct {
	file, date, asOf, zone         string
	grace                          time.Duration
	orders, payments, coupons, out string
	pending, stateDSN, token       string
	repair, apply                  bool
}

func runReconcile(ctx context.Context, f runFlags, stdout io.Writer) (*reconcile.JobResult, error) {
	if f.date == "" {
		return nil, errors.New("--date is required")
	}
	if f.apply && !f.repair {
		return nil, errors.New("--apply needs --repair")
	}
	c, err := loadReconcileConfig(f.file)
	if err != nil {
		return nil, err
	}
	c.memoryLimit()
	if f.zone != "" {
		c.Zone = f.zone
	}
	zone, err := c.zone()
	if err != nil {
		return nil, err
	}
	day, err := reconcile.Day(f.date, zone)
	if err != nil {
		return nil, err
	}
	if f.grace == 0 {
		f.grace = c.Grace
	}
	if err := c.checkGrace(f.grace); err != nil {
		return nil, err
	}
	job := reconcile.Job{
		Options: reconcile.Options{
			Date: day, Grace: f.grace, PendingDays: c.PendingDays,
			SpillDir: c.SpillDir, Progress: reconcile.TerminalProgress(os.Stderr),
		},
		Out: f.out, PendingFile: f.pending, Report: stdout, Host: hostID(),
	}
	if f.asOf != "" {
		if job.AsOf, err = time.Parse(time.RFC3339Nano, f.asOf); err != nil {
			return nil, fmt.Errorf("--as-of %q: want an RFC 3339 time", f.asOf)
		}
	}
	if job.Out == "" {
		job.Out = filepath.Join(c.OutDir, f.date)
	}
	switch n := countSet(f.orders, f.payments, f.coupons); {
	case n == 3:
		job.Sources = reconcile.Sources{
			Orders: reconcile.CSVOrders{Path: f.orders}, Payments: reconcile.CSVPayments{Path: f.payments}, Ledger: reconcile.CSVCoupons{Path: f.coupons},
		}
		abs, _ := filepath.Abs(f.orders)
		job.SourceKey = reconcile.SourceKey("csv", filepath.Dir(abs))
	case n > 0:
		return nil, errors.New("--orders, --payments and --coupons go together")
	case c.Source == "csv":
		return nil, errors.New("reconcile.source is csv: give --orders, --payments and --coupons")
	default:
		if job.Sources, job.SourceKey, err = c.mysqlSources(ctx); err != nil {
			return nil, err
		}
		defer job.Sources.Close()
	}
	if f.stateDSN == "" {
		f.stateDSN = c.stateDSN()
	}
	if f.stateDSN != "none" {
		if job.State, err = reconcile.OpenState(ctx, f.stateDSN); err != nil {
			return nil, err
		}
		defer job.State.Close()
	} else if f.apply {
		return nil, errors.New(`--apply records repairs in the state database; it cannot run with state "none"`)
	}
	if f.repair {
		rp, conn, err := c.repairer(job.State, f.apply, f.token, f.grace)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		job.Repair = rp
		if !f.apply {
			fmt.Fprintln(stdout, "repair dry run (add --apply to carry out the RELEASE_COUPON and RETURN_COUPON lines and record them):")
		}
	}
	res, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	printResult(stdout, res)
	return res, nil
}

func countSet(ss ...string) int {
	n := 0
	for _, s := range ss {
		if s != "" {
			n++
		}
	}
	return n
}

func printResult(w io.Writer, res *reconcile.JobResult) {
	secs := res.Elapsed.Seconds()
	rows := res.Rows.Orders + res.Rows.Payments + res.Rows.Ledger
	fmt.Fprintf(w, "reconcile %s as of %s: %s rows in %.1fs (%s rows/s)\n", res.Date, res.AsOf.Format(time.RFC3339),
		reconcile.Money(rows), secs, reconcile.Money(int64(float64(rows)/max(secs, 1e-9))))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "class\tfindings\topen\tresolved\tat risk\t")
	for _, c := range reconcile.Classes {
		t := res.Totals[c]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t\n", c, t.Count, t.Open, t.Resolved, reconcile.Money(t.AmountAtRisk))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%s\t\n", res.Findings, res.Open, res.Resolved, reconcile.Money(res.MoneyAtRisk))
	_ = tw.Flush()
	fmt.Fprintf(w, "pending (in flight, re-checked tomorrow): %d; carried in: %d\n", res.Pending, res.Rows.Carried)
	if len(res.Repairs) > 0 {
		fmt.Fprintf(w, "repairs: %v\n", map[string]int(res.Repairs))
	}
	fmt.Fprintf(w, "report: %s\n", res.Run.ReportPath)
}

func reconcileSchedule(ctx context.Context, args []string) error {
	file, _, err := configFlag("reconcile schedule", args)
	if err != nil {
		return err
	}
	c, err := loadReconcileConfig(file)
	if err != nil {
		return err
	}
	c.memoryLimit()
	log := cli.NewLogger(c.level)
	zone, err := c.zone()
	if err != nil {
		return err
	}
	grace := c.Grace
	if err := c.checkGrace(grace); err != nil {
		return err
	}
	mode := c.ScheduleRepair
	if mode != "off" && mode != "dry-run" && mode != "apply" {
		return fmt.Errorf("reconcile.schedule_repair %q: want off, dry-run or apply", mode)
	}
	if c.stateDSN() == "none" {
		return errors.New("reconcile schedule needs a state database (reconcile.state_dsn)")
	}
	state, err := reconcile.OpenState(ctx, c.stateDSN())
	if err != nil {
		return err
	}
	defer state.Close()
	// The books' key only names them; the sources are opened per run.
	names := append([]string{c.OrdersDSN, c.PaymentsDSN}, c.shardDSNs...)
	s := &reconcile.Scheduler{
		DB: state, Cron: c.Schedule, Zone: zone, SourceKey: reconcile.SourceKey("mysql", names...),
		Owner: hostID(), Lease: c.Lease, Log: log,
		Run: func(ctx context.Context, day time.Time) (int64, error) {
			src, key, err := c.mysqlSources(ctx)
			if err != nil {
				return 0, err
			}
			defer src.Close()
			date := day.Format(time.DateOnly)
			job := reconcile.Job{
				Options: reconcile.Options{Date: day, Grace: grace, PendingDays: c.PendingDays, SpillDir: c.SpillDir},
				Sources: src, SourceKey: key, State: state, Host: hostID(),
				Out:    filepath.Join(c.OutDir, date),
				Report: &logWriter{log: log, date: date},
			}
			if mode != "off" {
				rp, conn, err := c.repairer(state, mode == "apply", "", grace)
				if err != nil {
					return 0, err
				}
				defer conn.Close()
				job.Repair = rp
			}
			res, err := job.Run(ctx)
			if err != nil {
				return 0, err
			}
			log.InfoContext(ctx, "reconciled", "date", date, "open", res.Open, "money_at_risk", res.MoneyAtRisk, "pending", res.Pending,
				"report", res.Run.ReportPath, "repairs", res.Repairs)
			return res.Run.ID, res.RepairErr
		},
	}
	return s.Start(ctx)
}

// logWriter logs each repair line the scheduler's job prints.
type logWriter struct {
	log  *slog.Logger
	date string
}

func (w *logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if line != "" {
			w.log.Info("repair", "date", w.date, "item", line)
		}
	}
	return len(p), nil
}

func reconcileRuns(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("reconcile runs", flag.ContinueOnError)
	file := fs.String("config", "", "YAML config file")
	limit := fs.Int("limit", 20, "how many runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := loadReconcileConfig(*file)
	if err != nil {
		return err
	}
	state, err := reconcile.OpenState(ctx, c.stateDSN())
	if err != nil {
		return err
	}
	defer state.Close()
	runs, _, err := reconcile.ListRuns(ctx, state, reconcile.Page{Size: *limit})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDATE\tSTATUS\tOPEN\tRESOLVED\tAT RISK\tPENDING\tREPORT")
	for _, r := range runs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", r.ID, r.Date, r.Status, r.Open, r.Resolved, reconcile.Money(r.MoneyAtRisk), r.Pending, r.ReportPath)
	}
	return tw.Flush()
}
