package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// finding is one line of reconcile's discrepancies.jsonl.
type finding struct {
	Class      string `json:"class"`
	OrderNo    string `json:"order_no"`
	CouponCode string `json:"coupon_code"`
	Detail     string `json:"detail"`
}

func (f finding) key() string { return f.Class + "/" + f.OrderNo + "/" + f.CouponCode }

// reconcileAvailable reports whether the coupon binary has the reconcile
// subcommand (issue 9): its usage lists the subcommands.
func (s *Stack) reconcileAvailable(ctx context.Context) bool {
	out, _ := exec.CommandContext(ctx, s.bins.coupon, "help").CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "reconcile" {
			return true
		}
	}
	return false
}

// reconcileConfig writes the coupon config plus the shop's databases, the
// sources `coupon reconcile run --config` reads.
func (s *Stack) reconcileConfig() (string, error) {
	b, err := os.ReadFile(s.couponConfigFile)
	if err != nil {
		return "", err
	}
	dsn := func(db string) string {
		return fmt.Sprintf("root@tcp(127.0.0.1:%d)/%s?parseTime=true&loc=UTC&interpolateParams=true", s.mysqlPort, db)
	}
	extra := fmt.Sprintf(`
# The sample shop's ledgers, for coupon reconcile.
shop:
  order_dsn: %s
  payment_dsn: %s
reconcile:
  orders_dsn: %s
  payments_dsn: %s
  state_dir: %s
  dtm_http: %s
  dtm_grpc: %s
  # The repair reads coupons (and would return or release them) as the
  # shop does: without a token every read is refused and each repair item
  # fails.
  coupon_token: %s
`, dsn(dbOrder), dsn(dbPayment), dsn(dbOrder), dsn(dbPayment), filepath.Join(s.Dir, "reconcile-state"), s.coordHTTP[0], s.coordGRPC[0], tokenShop)
	file := filepath.Join(s.Dir, "reconcile.yaml")
	return file, os.WriteFile(file, append(b, extra...), 0o644)
}

// reconcileRun runs `coupon reconcile run` once; exit 0 is clean, 1 is
// findings, anything else an error.
func (s *Stack) reconcileRun(ctx context.Context, config, date, out string, repair bool) ([]finding, string, error) {
	args := []string{"reconcile", "run", "--date", date, "--config", config, "--out", out}
	if repair {
		args = append(args, "--repair")
	}
	cmd := exec.CommandContext(ctx, s.bins.coupon, args...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	output, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	exit := -1
	if errors.As(err, &ee) {
		exit = ee.ExitCode()
	}
	// Exit 2 after a repair run that wrote its items means some repairs
	// failed: each is a line of the output, judged with the findings.
	_, itemsErr := os.Stat(filepath.Join(out, "repairs.jsonl"))
	repairsFailed := repair && exit == 2 && itemsErr == nil
	if err != nil && exit != 1 && !repairsFailed {
		return nil, string(output), fmt.Errorf("coupon %s: %w\n%s", strings.Join(args, " "), err, lastLines(string(output), 20))
	}
	f, err := os.Open(filepath.Join(out, "discrepancies.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, string(output), nil
	}
	if err != nil {
		return nil, string(output), err
	}
	defer f.Close()
	var fs []finding
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var x finding
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			return nil, string(output), fmt.Errorf("discrepancies.jsonl: %w", err)
		}
		fs = append(fs, x)
	}
	return fs, string(output), sc.Err()
}

// reconcile checks invariant 6 over the whole run: reconcile the run's days
// twice and once more as a repair dry run, and give each scenario the
// findings on its orders.
func (s *Stack) reconcile(ctx context.Context, rep *Report) {
	set := func(fn func(v *verdict, prefix string, own map[string]bool)) {
		for i := range rep.Scenarios {
			sc := &rep.Scenarios[i]
			if sc.Error != "" {
				continue
			}
			v := &verdict{inv: map[int]*Invariant{}}
			for j := range sc.Invariants {
				v.inv[sc.Invariants[j].ID] = &sc.Invariants[j]
			}
			inv := v.inv[6]
			inv.Status, inv.Note = held, ""
			fn(v, sc.prefix, sc.own)
		}
	}
	if !s.reconcileAvailable(ctx) {
		set(func(v *verdict, _ string, _ map[string]bool) {
			v.skip(6, "reconcile not available (coupon reconcile run, issue 9, not in this build)")
		})
		return
	}
	config, err := s.reconcileConfig()
	if err != nil {
		set(func(v *verdict, _ string, _ map[string]bool) { v.fail(6, "reconcile", "reconcile config: %v", err) })
		return
	}
	var days []string
	for d := rep.Started.UTC().Truncate(24 * time.Hour); !d.After(time.Now().UTC()); d = d.Add(24 * time.Hour) {
		days = append(days, d.Format(time.DateOnly))
	}
	var first, second []finding
	var repairOut strings.Builder
	for _, day := range days {
		a, _, err := s.reconcileRun(ctx, config, day, filepath.Join(s.Dir, "reconcile", day, "1"), false)
		if err == nil {
			var b []finding
			if b, _, err = s.reconcileRun(ctx, config, day, filepath.Join(s.Dir, "reconcile", day, "2"), false); err == nil {
				var out string
				_, out, err = s.reconcileRun(ctx, config, day, filepath.Join(s.Dir, "reconcile", day, "repair"), true)
				repairOut.WriteString(out)
				first, second = append(first, a...), append(second, b...)
			}
		}
		if err != nil {
			// A reconcile that cannot run checks nothing: that fails the
			// invariant rather than skipping it, or a soak whose reconcile
			// broke would read as clean.
			set(func(v *verdict, _ string, _ map[string]bool) { v.fail(6, "reconcile", "reconcile failed: %v", err) })
			return
		}
	}
	set(func(v *verdict, prefix string, own map[string]bool) {
		mine := func(fs []finding) map[string]finding {
			m := map[string]finding{}
			for _, f := range fs {
				if strings.HasPrefix(f.OrderNo, prefix) && !own[f.OrderNo] {
					m[f.key()] = f
				}
			}
			return m
		}
		a, b := mine(first), mine(second)
		keys := make([]string, 0, len(a))
		for k := range a {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f := a[k]
			v.fail(6, f.OrderNo, "%s coupon %s: %s", f.Class, f.CouponCode, f.Detail)
		}
		if len(a) != len(b) {
			v.fail(6, prefix, "the second reconcile found %d discrepancies, the first %d", len(b), len(a))
		}
		for k, f := range b {
			if _, ok := a[k]; !ok {
				v.fail(6, f.OrderNo, "only the second reconcile reports %s", f.Class)
			}
		}
		for _, line := range strings.Split(repairOut.String(), "\n") {
			if strings.Contains(line, prefix) && !mentionsOwn(line, own) {
				v.fail(6, prefix, "repair dry run proposes: %s", strings.TrimSpace(line))
				break
			}
		}
	})
}

// mentionsOwn reports whether a repair line is about one of the scenario's
// own transactions.
func mentionsOwn(line string, own map[string]bool) bool {
	for _, f := range strings.Fields(line) {
		if own[f] {
			return true
		}
	}
	return false
}
