package explore_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/testenv"
)

// TestExplorerCatchesBrokenBuilds: the explorer, run on a build with a
// known money hole put back (-tags faults, COUPON_FAULTS), reports a
// schedule that fails the check guarding against it. A checker that
// cannot fail proves nothing.
func TestExplorerCatchesBrokenBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package with -tags faults and explores once per fault")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "explore.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-tags", "faults", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c -tags faults: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		fault, check, txns string
	}{
		// cancel-ignores-gid is not here: through the barrier a Cancel
		// reaches the coupon only after its own Try wrote its barrier row,
		// which a Try does only when it takes (or holds) the lock, so no
		// schedule lets a Cancel find another transaction's lock.
		// The refund arrives before the coupon's Confirm (DTM confirms in
		// reverse order), answers OK with nothing to return, and the
		// Confirm then uses the coupon on a refunded order.
		{"return-ignores-locked", CheckRefundReturns, "2"},
		{"confirm-skips-ledger", CheckLedger, "1"},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			var out testenv.Buffer
			cmd := exec.CommandContext(ctx, bin, "-test.run", "^TestInterleavingExplorer$", "-test.short",
				"-explore.txns", tc.txns, "-explore.until", tc.check)
			cmd.Env = append(os.Environ(), "COUPON_FAULTS="+tc.fault)
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err == nil {
				t.Fatalf("the explorer passed a build with %s:\n%s", tc.fault, out.Tail(40))
			}
			if !strings.Contains(out.String(), "violation "+tc.check+":") {
				t.Fatalf("the explorer failed (%v) without naming %s:\n%s", err, tc.check, out.Tail(40))
			}
			t.Logf("%s caught: %s", tc.fault, firstLine(out.String(), "violation "+tc.check+":"))
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
