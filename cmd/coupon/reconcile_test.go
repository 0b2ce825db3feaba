package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/cli"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/reconcile/gen"
)

func TestReconcileRunExitStatus(t *testing.T) {
	state := testenv.MustDatabase(t, testenv.Unique(t)+"_state")
	dirty, _, err := gen.Write(t.TempDir(), gen.Spec{Date: time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC), Orders: 100, Inject: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	clean, _, err := gen.Write(t.TempDir(), gen.Spec{Date: time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC), Orders: 100, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "orders.csv")
	if err := os.WriteFile(bad, []byte("order_no,user_id,status\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	csv := func(f gen.Files) []string {
		return []string{"--orders", f.Orders, "--payments", f.Payments, "--coupons", f.Coupons}
	}
	tests := []struct {
		name     string
		args     []string
		want     int
		wantOut  bool
		wantText string
	}{
		{"findings", csv(dirty), 1, true, "open findings"},
		{"clean", csv(clean), 0, true, ""},
		{"clean without state", append(csv(clean), "--state-dsn", "none"), 0, true, ""},
		{"bad csv", []string{"--orders", bad, "--payments", dirty.Payments, "--coupons", dirty.Coupons}, 2, false, "bad header"},
		{"no date", append(csv(dirty), "--date", ""), 2, false, "--date is required"},
		{"as-of outside the day", append(csv(dirty), "--as-of", "2026-03-12T00:00:00Z"), 2, false, "outside the day"},
		{"grace too short", append(csv(dirty), "--grace", "1m"), 2, false, "must exceed DTM's TimeoutToFail"},
		{"apply without repair", append(csv(dirty), "--apply"), 2, false, "--apply needs --repair"},
		{"half the files", []string{"--orders", dirty.Orders}, 2, false, "go together"},
		{"unknown flag", []string{"--nope"}, 2, false, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			args := append([]string{"run", "--date", "2026-03-10", "--out", out, "--state-dsn", state}, tt.args...)
			stdout := os.Stdout
			os.Stdout, _ = os.Open(os.DevNull)
			err := reconcileCmd(context.Background(), args)
			os.Stdout = stdout
			if got := cli.Status(err); got != tt.want {
				t.Fatalf("exit status %d (%v); want %d", got, err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not contain %q", err, tt.wantText)
			}
			_, serr := os.Stat(filepath.Join(out, "report.html"))
			if (serr == nil) != tt.wantOut {
				t.Errorf("report written = %v; want %v", serr == nil, tt.wantOut)
			}
		})
	}
}
