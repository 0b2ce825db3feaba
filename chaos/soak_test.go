package chaos_test

import (
	"context"
	"testing"
	"time"

	"github.com/opencoupon/coupon/chaos"
)

// mustHold fails t for every violated or skipped invariant of s (a
// reconcile that could not run fails invariant 6) and for a scenario that
// was not exercised.
func mustHold(t *testing.T, s chaos.ScenarioResult) {
	t.Helper()
	if s.Error != "" {
		t.Errorf("%s: %s", s.Name, s.Error)
	}
	for _, inv := range s.Invariants {
		if inv.Status == "violated" || inv.Status == "skipped" {
			t.Errorf("%s: invariant %d %s: %s %v %s", s.Name, inv.ID, inv.Name, inv.Status, inv.Details, inv.Note)
		}
	}
	if !s.Exercised {
		t.Errorf("%s: not exercised: %d commits, floor %d", s.Name, s.Committed, s.Floor)
	}
}

// TestBranchDisorderCappedUser: branch-disorder ends with a round whose
// user is at the service's daily cap, so every Try of it is refused with
// DAILY_USE_LIMIT_REACHED. The scenario must expect those transactions to
// abort (and the coupons to stay AVAILABLE) and report no violation — on
// the old scenario, which recorded commit from its plan, this was
// invariant 2 "succeeded but coupon … is AVAILABLE".
func TestBranchDisorderCappedUser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole stack")
	}
	bin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := chaos.Run(ctx, chaos.Options{Scenarios: []string{"branch-disorder"}, Duration: 4 * time.Second, Seed: 7,
		Stack: chaos.StackOptions{Dir: t.TempDir(), BinDir: bin}})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	s := rep.Scenarios[0]
	if n := s.RefusedTries["DAILY_USE_LIMIT_REACHED"]; n < 8 {
		t.Errorf("got %d Tries refused at the daily cap (refused: %v), want one per disorder sequence at least", n, s.RefusedTries)
	}
	if s.Aborts["refusal"] == 0 {
		t.Errorf("got aborts %v, want some for a refusal", s.Aborts)
	}
	mustHold(t, s)
}

// TestMoneySafetyScenarios runs the three money-safety scenarios against
// the production build; each holds once the service and the coordinator
// are right: no route's resubmit marks a transaction succeed with its
// coupon LOCKED (resubmit-every-route), the janitor leaves an unfinished
// transaction's barrier rows so a late Cancel releases the coupon
// (janitor-during-retry), and a refund before the coupon's Confirm still
// returns the coupon (refund-before-confirm).
func TestMoneySafetyScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole stack")
	}
	bin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rep, err := chaos.Run(ctx, chaos.Options{
		Scenarios: []string{"resubmit-every-route", "janitor-during-retry", "refund-before-confirm"},
		Duration:  4 * time.Second, Seed: 7, Stack: chaos.StackOptions{Dir: t.TempDir(), BinDir: bin}})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, s := range rep.Scenarios {
		t.Run(s.Name, func(t *testing.T) { mustHold(t, s) })
	}
}

// TestSoakCatchesBrokenBuild: a soak of a few scenarios (20s each, about
// three minutes with the checks) against a coupon build whose Cancel
// releases a coupon whatever transaction holds it (tools/mutate's
// cancel-ignores-gid, built with -overlay) fails the run: proof that a soak can fail, not only
// the single-scenario checks of TestCheckersCatchBrokenBuilds.
func TestSoakCatchesBrokenBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("a soak of a few minutes")
	}
	bin := binaries(t)
	coupon := mutantCoupon(t, "cancel-ignores-gid")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := chaos.Run(ctx, chaos.Options{
		Scenarios: []string{"partition-coordinator-coupon", "branch-disorder", "two-transactions-one-order"},
		Duration:  20 * time.Second, Seed: uint64(time.Now().UnixNano()),
		Stack: chaos.StackOptions{Dir: t.TempDir(), BinDir: bin, CouponBin: coupon},
	})
	if err != nil {
		t.Fatalf("run (seed %d): %v", rep.Seed, err)
	}
	if !rep.Failed() || rep.Violations == 0 {
		t.Fatalf("seed %d: a soak of a build whose Cancel ignores the gid found %d violations; want the run to fail\n%s", rep.Seed, rep.Violations, rep.Summary())
	}
	for _, s := range rep.Scenarios {
		if s.Name == "branch-disorder" && s.Invariants[1].Status != "violated" {
			t.Errorf("seed %d: branch-disorder invariant 2: got %s, want violated", rep.Seed, s.Invariants[1].Status)
		}
	}
}
