// Package reconcilebench is `couponlab bench reconcile`: it generates a day of
// N orders with their payments and coupon ledger (reconcile/gen, one of
// every finding class injected), reconciles it from CSV files (or, with
// --source mysql, after loading it into fresh MySQL databases), checks the
// findings are exactly the injected ones, and prints rows/s and peak RSS.
package reconcilebench

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // driver

	"github.com/opencoupon/coupon/examples/shop"
	"github.com/opencoupon/coupon/internal/app"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	"github.com/opencoupon/coupon/reconcile"
	"github.com/opencoupon/coupon/reconcile/gen"
)

// Main runs the benchmark.
func Main(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("bench reconcile", flag.ContinueOnError)
	orders := fs.Int("orders", 1_000_000, "orders to generate (about 3 ledger rows each)")
	source := fs.String("source", "csv", "csv, or mysql (loads the dataset into fresh databases first)")
	server := fs.String("mysql", "root@tcp(127.0.0.1:3306)/", "MySQL server for --source mysql (databases bench_rc_* are created and dropped)")
	dir := fs.String("dir", "", "where the CSV files and spill go (default a temporary directory, removed)")
	runs := fs.Int("runs", 1, "reconcile the dataset this many times and report each")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the reconcile runs to this file")
	memLimit := fs.Int64("memory-limit", 200<<20, "Go soft memory limit in bytes, as `coupon reconcile run` sets it (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *memLimit > 0 {
		debug.SetMemoryLimit(*memLimit)
	}
	work := *dir
	if work == "" {
		d, err := os.MkdirTemp("", "reconcile-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	day := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	t0 := time.Now()
	files, want, err := gen.Write(work, gen.Spec{Date: day, Orders: *orders, Inject: 1, Seed: 42})
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	size := fileSize(files.Orders) + fileSize(files.Payments) + fileSize(files.Coupons)
	fmt.Fprintf(out, "generated %d orders: %s rows (%s coupon ledger rows), %.0f MB of CSV in %.1fs\n",
		*orders, reconcile.Money(want.Rows), reconcile.Money(want.LedgerRows), float64(size)/1e6, time.Since(t0).Seconds())
	src := reconcile.Sources{
		Orders: reconcile.CSVOrders{Path: files.Orders}, Payments: reconcile.CSVPayments{Path: files.Payments}, Ledger: reconcile.CSVCoupons{Path: files.Coupons},
	}
	switch *source {
	case "csv":
	case "mysql":
		var cleanup func()
		src, cleanup, err = loadMySQL(ctx, *server, files, out)
		if cleanup != nil {
			defer cleanup()
		}
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("--source %q: want csv or mysql", *source)
	}
	fmt.Fprintf(out, "machine: %d CPUs, load average %s\n", runtime.NumCPU(), loadAvg())
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for i := range *runs {
		var disc bytes.Buffer
		runtime.GC()
		res, err := reconcile.Reconcile(ctx, reconcile.Options{Date: day, Grace: 10 * time.Minute, PendingDays: 3, SpillDir: work},
			src, reconcile.Outputs{Discrepancies: &disc, Pending: io.Discard})
		if err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		if err := verify(disc.Bytes(), want, res); err != nil {
			return err
		}
		rows := res.Rows.Orders + res.Rows.Payments + res.Rows.Ledger
		secs := res.Elapsed.Seconds()
		fmt.Fprintf(out, "run %d (%s): %s rows in %.2fs (read %.2fs) = %s rows/s (coupon ledger %s rows/s); %d findings as injected, %d pending; peak RSS %d MB\n",
			i+1, *source, reconcile.Money(rows), secs, res.ReadElapsed.Seconds(), reconcile.Money(int64(float64(rows)/secs)), reconcile.Money(int64(float64(res.Rows.Ledger)/secs)),
			res.Findings, res.Pending, peakRSS()>>20)
	}
	return nil
}

// verify checks the run found exactly what was injected.
func verify(disc []byte, want gen.Expected, res *reconcile.Result) error {
	got := map[reconcile.Key]bool{}
	sc := bufio.NewScanner(bytes.NewReader(disc))
	for sc.Scan() {
		var f reconcile.Finding
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			return err
		}
		got[f.Key()] = true
	}
	var diff []string
	for k := range got {
		if !want.Findings[k] {
			diff = append(diff, fmt.Sprintf("unexpected %v", k))
		}
	}
	for k := range want.Findings {
		if !got[k] {
			diff = append(diff, fmt.Sprintf("missed %v", k))
		}
	}
	if len(diff) > 0 || res.Findings != int64(len(want.Findings)) || res.Pending != int64(len(want.Pending)) {
		return fmt.Errorf("findings are not the injected ones (%d findings, %d pending; want %d, %d): %s",
			res.Findings, res.Pending, len(want.Findings), len(want.Pending), strings.Join(diff, "; "))
	}
	return nil
}

// loadMySQL creates the shop's order and payment databases and two coupon
// shards, loads the dataset, and returns MySQL sources over them.
func loadMySQL(ctx context.Context, server string, files gen.Files, out io.Writer) (reconcile.Sources, func(), error) {
	name := fmt.Sprintf("bench_rc_%d", time.Now().UnixNano()%1e9)
	dbs := []string{name + "_order", name + "_payment", name + "_main", name + "_s0", name + "_s1"}
	dsn := func(db string) string { return server + db + "?parseTime=true&loc=UTC&interpolateParams=true" }
	root, err := sql.Open("mysql", server)
	if err != nil {
		return reconcile.Sources{}, nil, err
	}
	cleanup := func() {
		for _, d := range dbs {
			_, _ = root.Exec("DROP DATABASE IF EXISTS `" + d + "`")
		}
		_ = root.Close()
	}
	t0 := time.Now()
	if err := shop.Migrate(ctx, dsn(dbs[0]), shop.OrderDB); err != nil {
		return reconcile.Sources{}, cleanup, err
	}
	if err := shop.Migrate(ctx, dsn(dbs[1]), shop.PaymentDB); err != nil {
		return reconcile.Sources{}, cleanup, err
	}
	if err := app.Migrate(ctx, couponmysql.Config{MainDSN: dsn(dbs[2]), ShardDSNs: []string{dsn(dbs[3]), dsn(dbs[4])}, TablesPerShard: 1}); err != nil {
		return reconcile.Sources{}, cleanup, err
	}
	// Refunds (issue 11) are not in the shop's schema yet.
	for _, q := range []string{
		"ALTER TABLE `" + dbs[0] + "`.orders MODIFY status ENUM('PENDING','PAID','CANCELLED','REFUNDED') NOT NULL DEFAULT 'PENDING'",
		"ALTER TABLE `" + dbs[1] + "`.payments MODIFY status ENUM('FROZEN','CAPTURED','RELEASED','REFUNDED') NOT NULL",
	} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			return reconcile.Sources{}, cleanup, err
		}
	}
	var pools []*sql.DB
	for _, d := range []string{dbs[0], dbs[1], dbs[3], dbs[4]} {
		db, err := reconcile.OpenSource(ctx, dsn(d))
		if err != nil {
			return reconcile.Sources{}, cleanup, err
		}
		db.SetMaxOpenConns(4)
		pools = append(pools, db)
	}
	prev := cleanup
	cleanup = func() {
		for _, p := range pools {
			_ = p.Close()
		}
		prev()
	}
	if err := gen.LoadMySQL(ctx, files, pools[0], pools[1], pools[2:]); err != nil {
		return reconcile.Sources{}, cleanup, err
	}
	fmt.Fprintf(out, "loaded into MySQL (%s_*) in %.1fs\n", name, time.Since(t0).Seconds())
	return reconcile.Sources{
		Orders: reconcile.MySQLOrders{DB: pools[0]}, Payments: reconcile.MySQLPayments{DB: pools[1]}, Ledger: reconcile.MySQLLedger{Shards: pools[2:]},
	}, cleanup, nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// peakRSS is the process's peak resident set (VmHWM) in bytes.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
