// Package claimbench measures a running coupon service over gRPC: claims on
// many templates, on one hot template and in a sold-out storm, and the
// GetTemplate and ListUserCoupons reads. It checks afterwards, from MySQL
// and Redis, that nothing was oversold, no per-user limit was exceeded and
// no request ID produced two coupons, and it measures in the same run a
// bare-work baseline (one Redis Lua decrement and one INSERT per claim,
// without the service) to compare the service against.
//
// `couponlab bench claim` runs it; deploy/local/bench.sh drives it against the
// local stack.
package claimbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencoupon/coupon/internal/auth"
)

// Scenario names, as given to --scenarios.
const (
	scenarioMany     = "many"
	scenarioHot      = "hot"
	scenarioSoldOut  = "soldout"
	scenarioGet      = "get"
	scenarioList     = "list"
	scenarioBaseline = "baseline"
	scenarioHealth   = "health"
)

var allScenarios = []string{scenarioMany, scenarioHot, scenarioSoldOut, scenarioGet, scenarioList, scenarioBaseline, scenarioHealth}

// options are the command-line flags.
type options struct {
	addr           string
	adminToken     string
	approverToken  string
	appToken       string
	maker, checker string
	conns          int
	pid            int
	pidFile        string
	mysqlMain      string
	mysqlShards    []string
	tablesPerShard int
	redis          []string
	redisPrefix    string
	benchPrefix    string
	duration       time.Duration
	warmup         time.Duration
	timeout        time.Duration
	settle         time.Duration
	concurrency    int
	scenarios      []string
	json           bool

	templates       int
	stock           int64
	perUserLimit    int
	retries         float64
	bursts          float64
	soldOutStock    int64
	soldOutAttempts int64
	getTemplates    int
	listUsers       int
	listCoupons     int
	baselinePool    int
}

func parse(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("couponlab bench claim", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:9090", "coupon service gRPC address")
	fs.StringVar(&o.adminToken, "admin-token", auth.DevTokenAlice, "bearer token of the admin who creates the templates (--maker)")
	fs.StringVar(&o.approverToken, "approver-token", auth.DevTokenBob, "bearer token of the admin who approves them (--checker)")
	fs.StringVar(&o.appToken, "app-token", auth.DevTokenApp, "bearer token of the claims and reads (role app)")
	fs.StringVar(&o.maker, "maker", "alice", "identity of --admin-token (created_by)")
	fs.StringVar(&o.checker, "checker", "bob", "identity of --approver-token (approved_by)")
	fs.IntVar(&o.conns, "conns", 8, "gRPC connections the clients spread over")
	fs.IntVar(&o.pid, "pid", 0, "pid of the service, whose RSS is sampled from /proc (default: read --pidfile)")
	fs.StringVar(&o.pidFile, "pidfile", ".run/coupon.pid", "file holding the service's pid")
	fs.StringVar(&o.mysqlMain, "mysql-main", "root@tcp(127.0.0.1:3306)/coupon_main", "the service's main database DSN, for verification")
	shards := fs.String("mysql-shards", "root@tcp(127.0.0.1:3306)/coupon_shard_0,root@tcp(127.0.0.1:3306)/coupon_shard_1",
		"the service's shard database DSNs, comma-separated, in shard order")
	fs.IntVar(&o.tablesPerShard, "tables-per-shard", 8, "coupon tables in each shard database, as the service is configured")
	redis := fs.String("redis", "127.0.0.1:6379", "the service's Redis address (several, comma-separated, for a cluster)")
	fs.StringVar(&o.redisPrefix, "redis-prefix", "coupon:", "the service's Redis key prefix")
	fs.StringVar(&o.benchPrefix, "bench-prefix", "claimbench:", "Redis key prefix of the baseline's scratch keys")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per scenario")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each timed scenario")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "deadline of each call")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "how long verification waits for stock and records to agree (claims still committing)")
	fs.IntVar(&o.concurrency, "concurrency", 200, "concurrent clients (each one call at a time)")
	scenarios := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run, in order: "+strings.Join(allScenarios, ", "))
	fs.BoolVar(&o.json, "json", false, "print the report as one JSON document instead of text")
	fs.IntVar(&o.templates, "templates", 64, "templates of the many-templates scenario")
	fs.Int64Var(&o.stock, "stock", 1_000_000, "stock of each template of the many and hot scenarios")
	fs.IntVar(&o.perUserLimit, "per-user-limit", 2, "per-user limit of the many and hot templates")
	fs.Float64Var(&o.retries, "retries", 0.02, "share of many/hot claims that re-send a request ID (half after it finished, half concurrently)")
	fs.Float64Var(&o.bursts, "bursts", 0.02, "share of many/hot claims that are limit bursts: per-user-limit+1 concurrent claims of one new user")
	fs.Int64Var(&o.soldOutStock, "soldout-stock", 1000, "stock of the sold-out storm's template")
	fs.Int64Var(&o.soldOutAttempts, "soldout-attempts", 100_000, "claims in the sold-out storm")
	fs.IntVar(&o.getTemplates, "get-templates", 16, "templates the GetTemplate scenario reads")
	fs.IntVar(&o.listUsers, "list-users", 1000, "users the ListUserCoupons scenario reads, each given --list-coupons coupons first")
	fs.IntVar(&o.listCoupons, "list-coupons", 5, "coupons of each ListUserCoupons user")
	fs.IntVar(&o.baselinePool, "baseline-pool", 16, "MySQL connections per shard database of the baseline (MariaDB allows 151 in all, shared with the service)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.mysqlShards = splitList(*shards)
	o.redis = splitList(*redis)
	o.scenarios = splitList(*scenarios)
	for _, s := range o.scenarios {
		if !slices.Contains(allScenarios, s) {
			return o, fmt.Errorf("unknown scenario %q (want some of %s)", s, strings.Join(allScenarios, ","))
		}
	}
	switch {
	case len(o.scenarios) == 0:
		return o, errors.New("--scenarios names none")
	case o.concurrency < 1 || o.conns < 1:
		return o, errors.New("--concurrency and --conns must be at least 1")
	case o.duration <= 0 || o.warmup < 0 || o.timeout <= 0:
		return o, errors.New("--duration and --timeout must be positive, --warmup not negative")
	case len(o.mysqlShards) == 0 || o.tablesPerShard < 1:
		return o, errors.New("--mysql-shards and --tables-per-shard are required")
	case len(o.redis) == 0:
		return o, errors.New("--redis is required")
	case o.templates < 1 || o.getTemplates < 1 || o.listUsers < 1 || o.listCoupons < 1:
		return o, errors.New("--templates, --get-templates, --list-users and --list-coupons must be at least 1")
	case o.stock < 1 || o.soldOutStock < 1 || o.soldOutAttempts < 1:
		return o, errors.New("--stock, --soldout-stock and --soldout-attempts must be at least 1")
	case o.perUserLimit < 0 || o.retries < 0 || o.bursts < 0 || o.retries+o.bursts > 1:
		return o, errors.New("--per-user-limit must not be negative; --retries and --bursts are shares in 0..1")
	case o.baselinePool < 1:
		return o, errors.New("--baseline-pool must be at least 1")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Report is the outcome of a run; --json prints it as is.
type Report struct {
	Scenarios []*Result `json:"scenarios"`
	Baseline  *Result   `json:"baseline,omitempty"`
	// Ratio is the hot template's (else many templates') claims/s over the
	// baseline's ops/s.
	Ratio float64 `json:"ratio_service_baseline,omitempty"`
	// GetRatio is GetTemplate reads/s over Health/Check calls/s, and
	// SoldOutRatio the sold-out storm's calls/s over them (same clients).
	GetRatio     float64 `json:"ratio_get_health,omitempty"`
	SoldOutRatio float64 `json:"ratio_soldout_health,omitempty"`
	// RSSLifetimePeakMB is the service's VmHWM at the end.
	RSSLifetimePeakMB float64   `json:"rss_lifetime_peak_mb,omitempty"`
	Verified          []*Verify `json:"verified"`
	Violations        []string  `json:"violations"`
	Targets           []Target  `json:"targets"`
}

// Main runs the benchmark with command-line args and prints its report to out.
func Main(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args, out)
	if err != nil {
		return err
	}
	if o.pid == 0 {
		o.pid = readPID(o.pidFile)
	}
	b, err := open(ctx, o)
	if err != nil {
		return err
	}
	defer b.close()
	p := printer{w: out, json: o.json}
	if o.pid == 0 {
		p.textf("note: no service pid (--pid, or --pidfile %s): RSS is not sampled\n", o.pidFile)
	} else if _, _, err := readRSS(o.pid); err != nil {
		p.textf("note: cannot read the RSS of pid %d (%v): RSS is not sampled\n", o.pid, err)
		b.o.pid = 0
	}
	rep := &Report{Scenarios: []*Result{}, Verified: []*Verify{}}
	runErr := b.run(ctx, rep, &p)
	rep.Violations = b.violations.list()
	if b.o.pid != 0 {
		if _, hwm, err := readRSS(b.o.pid); err == nil {
			rep.RSSLifetimePeakMB = mb(hwm)
		}
	}
	rep.Targets = targets(rep)
	p.summary(rep)
	if p.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
	if runErr != nil {
		return runErr
	}
	if n := b.violations.count(); n > 0 {
		return fmt.Errorf("verification failed: %d violations (first: %s)", n, rep.Violations[0])
	}
	return nil
}

// run runs the chosen scenarios in order, verifying each claim scenario
// as soon as it ends.
func (b *bench) run(ctx context.Context, rep *Report, p *printer) error {
	for _, name := range b.o.scenarios {
		var (
			res *Result
			ver *Verify
			err error
		)
		switch name {
		case scenarioMany:
			res, ver, err = b.claims(ctx, name, b.o.templates)
		case scenarioHot:
			res, ver, err = b.claims(ctx, name, 1)
		case scenarioSoldOut:
			res, ver, err = b.soldOut(ctx)
		case scenarioGet:
			res, err = b.getTemplates(ctx)
		case scenarioList:
			res, ver, err = b.listCoupons(ctx)
		case scenarioBaseline:
			res, err = b.baseline(ctx)
		case scenarioHealth:
			res, err = b.health(ctx)
		}
		if err != nil {
			return fmt.Errorf("scenario %s: %w", name, err)
		}
		if name == scenarioBaseline {
			rep.Baseline = res
		} else {
			rep.Scenarios = append(rep.Scenarios, res)
		}
		p.result(res)
		if ver != nil {
			rep.Verified = append(rep.Verified, ver)
			p.verify(ver)
		}
	}
	if rep.Baseline != nil && rep.Baseline.PerSecond > 0 {
		if s := rep.scenario(scenarioHot); s != nil {
			rep.Ratio = s.PerSecond / rep.Baseline.PerSecond
		} else if s := rep.scenario(scenarioMany); s != nil {
			rep.Ratio = s.PerSecond / rep.Baseline.PerSecond
		}
	}
	if h := rep.scenario(scenarioHealth); h != nil && h.CallsPerSecond > 0 {
		if g := rep.scenario(scenarioGet); g != nil {
			rep.GetRatio = g.PerSecond / h.CallsPerSecond
		}
		if so := rep.scenario(scenarioSoldOut); so != nil {
			rep.SoldOutRatio = so.CallsPerSecond / h.CallsPerSecond
		}
	}
	return nil
}

func (r *Report) scenario(name string) *Result {
	for _, s := range r.Scenarios {
		if s.Scenario == name {
			return s
		}
	}
	return nil
}

// Target is one of the goals for the 2-core dev machine.
type Target struct {
	Goal  string `json:"goal"`
	Got   string `json:"got"`
	Met   bool   `json:"met"`
	Notes string `json:"notes,omitempty"`
}

// targets compares the run with the goals; a miss is reported, not failed:
// the figures depend on the machine and on what else runs on it.
func targets(r *Report) []Target {
	var ts []Target
	ms := func(d float64) string { return strconv.FormatFloat(d, 'f', 1, 64) + "ms" }
	if s := r.scenario(scenarioHot); s != nil && r.Ratio > 0 {
		ts = append(ts, Target{Goal: "hot claims >= 1.5 x baseline, p99 <= 50ms",
			Got: fmt.Sprintf("%.2fx p99=%s", r.Ratio, ms(s.P99ms)), Met: r.Ratio >= 1.5 && s.P99ms <= 50})
	}
	if r.GetRatio > 0 {
		ts = append(ts, Target{Goal: "GetTemplate >= 0.8 x Health/Check", Got: fmt.Sprintf("%.2fx", r.GetRatio), Met: r.GetRatio >= 0.8})
	}
	if r.SoldOutRatio > 0 {
		ts = append(ts, Target{Goal: "sold-out claim >= 0.8 x Health/Check", Got: fmt.Sprintf("%.2fx", r.SoldOutRatio), Met: r.SoldOutRatio >= 0.8})
	}
	if s := r.scenario(scenarioList); s != nil {
		ts = append(ts, Target{Goal: "ListUserCoupons p99 <= 20ms", Got: ms(s.P99ms), Met: s.P99ms <= 20})
	}
	peak := 0.0
	for _, s := range r.Scenarios {
		peak = max(peak, s.RSSPeakMB)
	}
	if peak > 0 {
		ts = append(ts, Target{Goal: "service RSS <= 300MB under load", Got: fmt.Sprintf("%.0fMB", peak), Met: peak <= 300})
	}
	return ts
}

// printer writes the text report, or nothing when the JSON report is wanted.
type printer struct {
	w    io.Writer
	json bool
}

func (p *printer) textf(format string, args ...any) {
	if !p.json {
		fmt.Fprintf(p.w, format, args...)
	}
}

func (p *printer) result(r *Result) {
	rss := "n/a"
	if r.RSSPeakMB > 0 {
		rss = fmt.Sprintf("%.0fMB", r.RSSPeakMB)
	}
	if r.ServiceCPUus > 0 || r.MariaDBCPUus > 0 {
		rss += fmt.Sprintf(" cpu/op service=%.0fus mariadb=%.0fus", r.ServiceCPUus, r.MariaDBCPUus)
	}
	lat := fmt.Sprintf("p50=%7.2fms p95=%7.2fms p99=%7.2fms", r.P50ms, r.P95ms, r.P99ms)
	errs := fmt.Sprintf("errors=%s", formatErrors(r.Errors))
	switch r.Kind {
	case "baseline":
		p.textf("baseline scenario=%-8s clients=%-4d calls=%-8d ok=%-8d ops/s=%-8.0f %s %-34s pool=%d/shard\n",
			r.Scenario, r.Clients, r.Calls, r.OK, r.PerSecond, lat, errs, r.Pool)
	case "claim":
		p.textf("claim    scenario=%-8s clients=%-4d calls=%-8d ok=%-8d claims/s=%-8.0f %s %-34s rss_peak=%s calls/s=%.0f replays=%d\n",
			r.Scenario, r.Clients, r.Calls, r.OK, r.PerSecond, lat, errs, rss, r.CallsPerSecond, r.Replays)
	default:
		p.textf("read     scenario=%-8s clients=%-4d calls=%-8d ok=%-8d reads/s=%-8.0f  %s %-34s rss_peak=%s\n",
			r.Scenario, r.Clients, r.Calls, r.OK, r.PerSecond, lat, errs, rss)
	}
}

func (p *printer) verify(v *Verify) {
	state := "ok"
	if v.Violations > 0 {
		state = fmt.Sprintf("FAILED (%d violations)", v.Violations)
	}
	p.textf("verify   scenario=%-8s templates=%d issued=%d taken=%d coupons_checked=%d retries_checked=%d limit_bursts=%d %s\n",
		v.Scenario, v.Templates, v.Issued, v.Taken, v.Coupons, v.RetriesChecked, v.Bursts, state)
}

func (p *printer) summary(r *Report) {
	if r.Ratio > 0 {
		p.textf("ratio hot/baseline=%.2f\n", r.Ratio)
	}
	if r.GetRatio > 0 {
		p.textf("ratio get/health=%.2f\n", r.GetRatio)
	}
	if r.SoldOutRatio > 0 {
		p.textf("ratio soldout/health=%.2f\n", r.SoldOutRatio)
	}
	if r.RSSLifetimePeakMB > 0 {
		p.textf("service rss lifetime peak (VmHWM)=%.0fMB\n", r.RSSLifetimePeakMB)
	}
	if len(r.Targets) > 0 {
		p.textf("targets (2-core dev machine; reported, not enforced):\n")
		for _, t := range r.Targets {
			state := "met"
			if !t.Met {
				state = "MISSED"
			}
			p.textf("  %-42s %-22s %s\n", t.Goal, t.Got, state)
		}
	}
	for _, v := range r.Violations {
		p.textf("VIOLATION %s\n", v)
	}
}

func formatErrors(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	sb.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%s:%d", k, m[k])
	}
	sb.WriteByte('}')
	return sb.String()
}

func readPID(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// token is a random hex string that makes this run's names unique.
func token() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
