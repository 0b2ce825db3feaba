// Package tccbench measures global TCC transactions per second through a DTM
// coordinator with the coupon service as participant (lock + confirm), with
// the sample shop's payment branch added, and with a textbook participant
// (one barrier and one UPDATE per branch, as in DTM's own examples) as the
// reference, all in one run against the same coordinator.
//
// The participants run in this process; the coordinator is the separate
// cmd/coordinator binary, reached with --dtm. `couponlab bench tcc` runs it and
// deploy/local/bench.sh drives it with the MySQL and the Redis store.
package tccbench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/dtm-labs/logger"
)

// Scenario names, as given to --scenarios.
const (
	ScenarioCoupon        = "coupon"
	ScenarioCouponPayment = "coupon+payment"
	ScenarioTextbook      = "textbook"
)

var allScenarios = []string{ScenarioCoupon, ScenarioCouponPayment, ScenarioTextbook}

// options are the command-line flags.
type options struct {
	dtm         string
	store       string
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	concurrency int
	scenarios   []string
	mysql       string
	redis       string
	prefix      string
	maxRate     int
	conns       int
	couponConns int
	keep        bool
	cpuProfile  string
	logLevel    slog.Level
}

func parse(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("couponlab bench tcc", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.dtm, "dtm", "", "DTM coordinator gRPC address, e.g. 127.0.0.1:36790 (required)")
	fs.StringVar(&o.store, "store", "mysql", "label of the coordinator's store in the report: mysql or redis")
	fs.DurationVar(&o.duration, "duration", 15*time.Second, "measured time per scenario")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each round of a scenario")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds the scenarios take turns in, each round running every scenario for its share of --duration, so that a change in the machine's load affects them alike")
	fs.IntVar(&o.concurrency, "concurrency", 64, "concurrent global transactions (more only adds latency once the machine is saturated)")
	scenarios := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run, in order: "+strings.Join(allScenarios, ", "))
	fs.StringVar(&o.mysql, "mysql", "root@tcp(127.0.0.1:3306)/", "MariaDB server DSN without a database name")
	fs.StringVar(&o.redis, "redis", "127.0.0.1:6379", "Redis address of the coupon service")
	fs.StringVar(&o.prefix, "prefix", "couponbench", "name prefix of the bench's databases and Redis keys; they are dropped at start and end")
	fs.IntVar(&o.maxRate, "max-rate", 3000, "transactions per second the prepared data must last for (warmups + duration); a round that runs out ends early")
	fs.IntVar(&o.couponConns, "coupon-conns", 15, "MySQL pool size of each coupon database (main and 2 shards; main serves only cache misses)")
	fs.IntVar(&o.conns, "conns", 10, "MySQL pool size of the payment and the textbook databases")
	fs.BoolVar(&o.keep, "keep", false, "keep the databases and Redis keys at the end, for inspection")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (participants and client) over the measured runs to this file")
	level := fs.String("log-level", "warn", "log level of the in-process services")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.dtm == "" {
		return o, errors.New("--dtm is required")
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return o, fmt.Errorf("--log-level: %w", err)
	}
	for s := range strings.SplitSeq(*scenarios, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return o, fmt.Errorf("--scenarios: unknown scenario %q (want %s)", s, strings.Join(allScenarios, ", "))
		}
		if slices.Contains(o.scenarios, s) {
			return o, fmt.Errorf("--scenarios: %q given twice", s)
		}
		o.scenarios = append(o.scenarios, s)
	}
	switch {
	case o.store != "mysql" && o.store != "redis" && o.store != "boltdb":
		return o, fmt.Errorf("--store %q: want mysql, redis or boltdb", o.store)
	case len(o.scenarios) == 0:
		return o, errors.New("--scenarios: none given")
	case o.duration <= 0 || o.warmup < 0:
		return o, errors.New("--duration must be positive and --warmup not negative")
	case o.rounds < 1 || o.rounds > 100:
		return o, errors.New("--rounds must be in 1..100")
	case o.concurrency < 1 || o.concurrency > 4096:
		return o, errors.New("--concurrency must be in 1..4096")
	case o.maxRate < 1:
		return o, errors.New("--max-rate must be positive")
	case o.conns < 1 || o.conns > 50 || o.couponConns < 1 || o.couponConns > 50:
		return o, errors.New("--conns and --coupon-conns must be in 1..50")
	case !strings.HasSuffix(o.mysql, "/"):
		return o, fmt.Errorf("--mysql %q: want a DSN without database name or parameters, ending in /", o.mysql)
	case !validPrefix(o.prefix):
		return o, fmt.Errorf("--prefix %q: want 1-40 lower-case letters, digits or underscores, starting with a letter", o.prefix)
	}
	return o, nil
}

func validPrefix(s string) bool {
	if len(s) == 0 || len(s) > 40 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Main runs the benchmark with command-line args and prints its report to
// out: one line per scenario, then the ratio of the coupon scenario to the
// textbook one. It fails when a committed transaction's effects are not all
// there, or when any transaction failed.
func Main(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args, out)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel}))
	// The DTM client logs every call at info and every failed one, with a
	// stack, at error; the bench counts and reports failures itself.
	logger.WithLogger(dtmLog{log})
	installCallTimes()

	b, err := setup(ctx, o, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := b.close(context.WithoutCancel(ctx)); cerr != nil {
			log.Warn("clean up", "err", cerr)
		}
	}()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	results := make([]*result, len(b.scenarios))
	for i, sc := range b.scenarios {
		results[i] = &result{name: sc.name, errs: map[string]int{}}
	}
	for round := range o.rounds {
		for i, sc := range b.scenarios {
			if err := b.slice(ctx, sc, round, results[i]); err != nil {
				return fmt.Errorf("scenario %s: %w", sc.name, err)
			}
		}
	}

	rates := map[string]float64{}
	var failed []string
	for i, sc := range b.scenarios {
		r := results[i]
		slices.Sort(r.lat)
		fmt.Fprintln(out, r.line(o.store))
		for _, e := range r.topErrors(3) {
			fmt.Fprintf(out, "  error %s\n", e)
		}
		if r.ranOut {
			fmt.Fprintf(out, "  note: the prepared data ran out, %s measured; raise --max-rate for a full run\n", r.elapsed.Round(10*time.Millisecond))
		}
		if r.errors > 0 || r.unsettled > 0 {
			failed = append(failed, fmt.Sprintf("%s: %d failed, %d committed but not settled", sc.name, r.errors, r.unsettled))
		}
		rates[sc.name] = r.rate()
	}
	if c, t := rates[ScenarioCoupon], rates[ScenarioTextbook]; c > 0 && t > 0 {
		fmt.Fprintf(out, "ratio coupon/textbook=%.2f\n", c/t)
	}
	if len(failed) > 0 {
		return fmt.Errorf("bench tcc: %s", strings.Join(failed, "; "))
	}
	return nil
}

// dtmLog routes the DTM client's log to slog at debug.
type dtmLog struct{ log *slog.Logger }

func (l dtmLog) Debugf(format string, args ...any) { l.logf(format, args) }
func (l dtmLog) Infof(format string, args ...any)  { l.logf(format, args) }
func (l dtmLog) Warnf(format string, args ...any)  { l.logf(format, args) }
func (l dtmLog) Errorf(format string, args ...any) { l.logf(format, args) }

func (l dtmLog) logf(format string, args []any) {
	if ctx := context.Background(); l.log.Enabled(ctx, slog.LevelDebug) {
		l.log.DebugContext(ctx, fmt.Sprintf(format, args...), "component", "dtm")
	}
}
