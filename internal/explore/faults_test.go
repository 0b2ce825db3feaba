package explore_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/testenv"
)

// TestExplorerCatchesBrokenBuilds: the explorer, run on a build with a
// known money hole put back (one of tools/mutate's mutations, compiled in
// with -overlay), reports a schedule that fails the check guarding against
// it. A checker that cannot fail proves nothing.
func TestExplorerCatchesBrokenBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package once per mutation and explores it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		mutation, check, txns string
	}{
		// cancel-ignores-gid is not here: through the barrier a Cancel
		// reaches the coupon only after its own Try wrote its barrier row,
		// which a Try does only when it takes (or holds) the lock, so no
		// schedule lets a Cancel find another transaction's lock.
		// The refund arrives before the coupon's Confirm (DTM confirms in
		// reverse order), answers OK with nothing to return, and the
		// Confirm then uses the coupon on a refunded order.
		{"return-ignores-locked", CheckRefundReturns, "2"},
		{"consume-skips-ledger", CheckLedger, "1"},
	} {
		t.Run(tc.mutation, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "explore.test")
			build := exec.CommandContext(ctx, "go", "test", "-c", "-overlay", testenv.MutantOverlay(t, tc.mutation), "-o", bin, ".")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go test -c with mutation %s: %v\n%s", tc.mutation, err, out)
			}
			var out testenv.Buffer
			cmd := exec.CommandContext(ctx, bin, "-test.run", "^TestInterleavingExplorer$", "-test.short",
				"-explore.txns", tc.txns, "-explore.until", tc.check)
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err == nil {
				t.Fatalf("the explorer passed a build with %s:\n%s", tc.mutation, out.Tail(40))
			}
			if !strings.Contains(out.String(), "violation "+tc.check+":") {
				t.Fatalf("the explorer failed (%v) without naming %s:\n%s", err, tc.check, out.Tail(40))
			}
			t.Logf("%s caught: %s", tc.mutation, firstLine(out.String(), "violation "+tc.check+":"))
		})
	}
}

func firstLine(s, prefix string) string {
	for l := range strings.SplitSeq(s, "\n") {
		if i := strings.Index(l, prefix); i >= 0 {
			return strings.TrimSpace(l[i:])
		}
	}
	return ""
}
