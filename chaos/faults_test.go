package chaos_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencoupon/coupon/chaos"
	"github.com/opencoupon/coupon/internal/testenv"
)

// TestCheckersCatchBrokenBuilds runs scenarios against a coupon binary built
// with one of tools/mutate's mutations put in (go build -overlay) and
// asserts that the invariant meant to catch it reports a violation: proof
// that each checker can fail. The bug exists only in that build; the
// production code has no hook for it.
func TestCheckersCatchBrokenBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole stack per case")
	}
	bin := binaries(t)

	cases := []struct {
		mutation  string
		scenario  string
		invariant int
	}{
		// A Cancel under another gid releases the first gid's lock, so a
		// committed transaction's coupon is back to AVAILABLE.
		{"cancel-ignores-gid", "branch-disorder", 2},
		// Claims whose write failed keep their stock unit: more missing
		// than any unknown outcome explains.
		{"claim-keeps-stock", "mysql-down", 5},
		// A USED coupon without its CONSUME ledger row.
		{"consume-skips-ledger", "redis-latency", 1},
	}
	for _, c := range cases {
		t.Run(c.mutation, func(t *testing.T) {
			coupon := mutantCoupon(t, c.mutation)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			rep, err := chaos.Run(ctx, chaos.Options{
				Scenarios: []string{c.scenario},
				Duration:  4 * time.Second,
				Seed:      7,
				Stack:     chaos.StackOptions{Dir: t.TempDir(), BinDir: bin, CouponBin: coupon},
			})
			if err != nil {
				t.Fatalf("run %s: %v", c.scenario, err)
			}
			got := rep.Scenarios[0].Invariants[c.invariant-1]
			if got.ID != c.invariant || got.Status != "violated" {
				t.Errorf("with %s, invariant %d of %s: got %s %v, want violated", c.mutation, c.invariant, c.scenario, got.Status, got.Details)
			}
		})
	}
}

// TestScenarioHolds runs one scenario against the production build and
// expects every invariant to hold, none skipped.
func TestScenarioHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole stack")
	}
	bin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := chaos.Run(ctx, chaos.Options{Scenarios: []string{"mysql-reset"}, Duration: 4 * time.Second, Seed: 3,
		Stack: chaos.StackOptions{Dir: t.TempDir(), BinDir: bin}})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	s := rep.Scenarios[0]
	if s.Ops == 0 || s.Claims == 0 || s.Orders == 0 || len(s.Faults) == 0 {
		t.Errorf("got %d ops, %d claims, %d orders, faults %v; want a workload that met a fault", s.Ops, s.Claims, s.Orders, s.Faults)
	}
	for _, inv := range s.Invariants {
		if inv.Status == "violated" || inv.Status == "skipped" {
			t.Errorf("invariant %d %s: %s %v %s", inv.ID, inv.Name, inv.Status, inv.Details, inv.Note)
		}
	}
}

var bins struct {
	once sync.Once
	dir  string
	err  error

	mu      sync.Mutex
	mutants map[string]string // mutation ID to binary
}

// binaries builds the coordinator, the shop and the coupon service once
// per test binary.
func binaries(tb testing.TB) string {
	tb.Helper()
	bins.once.Do(func() {
		root := moduleRoot(tb)
		bins.dir, bins.err = os.MkdirTemp("", "chaos-test-bin-")
		for _, b := range [][]string{
			{"coordinator", "./cmd/coordinator"}, {"shop", "./examples/shop/cmd/shop"},
			{"coupon", "./cmd/coupon"},
		} {
			if bins.err == nil {
				bins.err = build(root, filepath.Join(bins.dir, b[0]), b[1], b[2:]...)
			}
		}
	})
	if bins.err != nil {
		tb.Fatal(bins.err)
	}
	return bins.dir
}

// mutantCoupon builds, once per test binary, the coupon service with the
// mutation id of tools/mutate (a known money bug put back) applied through
// an overlay, and returns the binary's path.
func mutantCoupon(tb testing.TB, id string) string {
	tb.Helper()
	dir := binaries(tb)
	bins.mu.Lock()
	defer bins.mu.Unlock()
	if bin, ok := bins.mutants[id]; ok {
		return bin
	}
	bin := filepath.Join(dir, "coupon-"+id)
	if err := build(moduleRoot(tb), bin, "./cmd/coupon", "-overlay", testenv.MutantOverlay(tb, id)); err != nil {
		tb.Fatal(err)
	}
	if bins.mutants == nil {
		bins.mutants = map[string]string{}
	}
	bins.mutants[id] = bin
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func moduleRoot(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func build(root, out, pkg string, flags ...string) error {
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}
