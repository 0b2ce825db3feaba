package chaos_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/chaos"
)

// TestConnectionFlood runs connection-flood twice. With the scenario's
// connection caps, the coupon service, under an RLIMIT_NOFILE of 512,
// rides out 680 idle connections on its three ports: every invariant
// holds, including 8 (the connected caller's claims, a new caller within
// the flood, no "too many open files"). With the caps turned off (0 = no
// cap, set by the stack's environment, which wins over the scenario's),
// the same flood exhausts its descriptors and invariant 8 must be
// violated: proof that the check can fail.
func TestConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole stack per case")
	}
	bin := binaries(t)
	run := func(t *testing.T, env []string) chaos.ScenarioResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		rep, err := chaos.Run(ctx, chaos.Options{Scenarios: []string{"connection-flood"}, Duration: 4 * time.Second, Seed: 7,
			Stack: chaos.StackOptions{Dir: t.TempDir(), BinDir: bin, CouponEnv: env}})
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		s := rep.Scenarios[0]
		if len(s.Invariants) != 8 || s.Invariants[7].ID != 8 {
			t.Fatalf("got invariants %+v, want 8 with the flood's last", s.Invariants)
		}
		return s
	}
	t.Run("capped", func(t *testing.T) {
		s := run(t, nil)
		mustHold(t, s)
		notes := strings.Join(s.Notes, "\n")
		for _, want := range []string{"a new caller got a call through", "the connected caller's claims during the flood"} {
			if !strings.Contains(notes, want) {
				t.Errorf("notes lack %q:\n%s", want, notes)
			}
		}
	})
	t.Run("uncapped", func(t *testing.T) {
		s := run(t, []string{"COUPON_GRPC_MAX_CONNECTIONS=0", "COUPON_HTTP_MAX_CONNECTIONS=0", "COUPON_OPS_MAX_CONNECTIONS=0"})
		inv := s.Invariants[7]
		if inv.Status != "violated" {
			t.Fatalf("invariant 8 without caps: got %s, want violated (notes: %v)", inv.Status, s.Notes)
		}
		t.Logf("without caps: %v; notes: %v", inv.Details, s.Notes)
	})
}
