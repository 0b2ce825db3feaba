package reconcile_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/reconcile"
	"github.com/opencoupon/coupon/reconcile/gen"
)

var day = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

func csvSources(f gen.Files) reconcile.Sources {
	return reconcile.Sources{
		Orders:   reconcile.CSVOrders{Path: f.Orders},
		Payments: reconcile.CSVPayments{Path: f.Payments},
		Ledger:   reconcile.CSVCoupons{Path: f.Coupons},
	}
}

// run reconciles and returns the result, the findings and the pending orders.
func run(tb testing.TB, opts reconcile.Options, src reconcile.Sources) (*reconcile.Result, []reconcile.Finding, []reconcile.Pending) {
	tb.Helper()
	var disc, pend bytes.Buffer
	if opts.Date.IsZero() {
		opts.Date = day
	}
	if opts.Grace == 0 {
		opts.Grace = 10 * time.Minute
	}
	if opts.PendingDays == 0 {
		opts.PendingDays = 3
	}
	if opts.SpillDir == "" {
		opts.SpillDir = tb.TempDir()
	}
	res, err := reconcile.Reconcile(context.Background(), opts, src, reconcile.Outputs{Discrepancies: &disc, Pending: &pend})
	if err != nil {
		tb.Fatalf("Reconcile: %v", err)
	}
	return res, decodeLines[reconcile.Finding](tb, disc.Bytes()), decodeLines[reconcile.Pending](tb, pend.Bytes())
}

func decodeLines[T any](tb testing.TB, b []byte) []T {
	tb.Helper()
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			tb.Fatalf("decode %s: %v", sc.Text(), err)
		}
		out = append(out, v)
	}
	return out
}

func keys(fs []reconcile.Finding) map[reconcile.Key]bool {
	m := map[reconcile.Key]bool{}
	for _, f := range fs {
		m[f.Key()] = true
	}
	return m
}

func pendingSet(ps []reconcile.Pending) map[string]bool {
	m := map[string]bool{}
	for _, p := range ps {
		m[p.OrderNo] = true
	}
	return m
}

// diffSets lists what is in got but not want (+) and in want but not got (-).
func diffSets[K comparable](got, want map[K]bool) string {
	var lines []string
	for k := range got {
		if !want[k] {
			lines = append(lines, fmt.Sprintf("+ %v", k))
		}
	}
	for k := range want {
		if !got[k] {
			lines = append(lines, fmt.Sprintf("- %v", k))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestGeneratedDatasets injects every class, refunds, in-flight orders and
// out-of-day records among clean noise and expects exactly what was injected,
// whatever the column order and however the partitions are split.
func TestGeneratedDatasets(t *testing.T) {
	tests := []struct {
		name    string
		spec    gen.Spec
		parts   int
		maxPart int64
	}{
		{"contract order", gen.Spec{Orders: 3000, Inject: 2, Seed: 1}, 0, 0},
		{"reordered columns, extra columns, quotes", gen.Spec{Orders: 3000, Inject: 2, Seed: 2, Reordered: true}, 0, 0},
		{"few partitions split again", gen.Spec{Orders: 3000, Inject: 3, Seed: 3}, 2, 8 << 10},
		{"injected only", gen.Spec{Inject: 1, Seed: 4}, 0, 0},
		{"files read in parts", gen.Spec{Orders: 3000, Inject: 2, Seed: 5}, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Date = day
			files, want, err := gen.Write(t.TempDir(), tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			opts := reconcile.Options{Partitions: tt.parts, MaxPartition: tt.maxPart, Workers: 3}
			if tt.maxPart < 0 {
				defer func(v int64) { *reconcile.SplitMinSize = v }(*reconcile.SplitMinSize)
				*reconcile.SplitMinSize, opts.MaxPartition = 0, 0
			}
			res, findings, pending := run(t, opts, csvSources(files))
			if d := diffSets(keys(findings), want.Findings); d != "" {
				t.Errorf("findings differ (+got -want):\n%s", d)
			}
			if len(findings) != len(want.Findings) {
				t.Errorf("%d findings, want %d (one per key)", len(findings), len(want.Findings))
			}
			if d := diffSets(pendingSet(pending), want.Pending); d != "" {
				t.Errorf("pending differ (+got -want):\n%s", d)
			}
			if got := res.Rows.Orders + res.Rows.Payments + res.Rows.Ledger; got != want.Rows {
				t.Errorf("rows read = %d, want %d", got, want.Rows)
			}
			if res.Open != int64(len(want.Findings)) || res.Pending != int64(len(want.Pending)) {
				t.Errorf("result open %d pending %d; want %d, %d", res.Open, res.Pending, len(want.Findings), len(want.Pending))
			}
			var risk int64
			for _, f := range findings {
				risk += f.AmountAtRisk
				if f.AmountAtRisk <= 0 || f.Detail == "" {
					t.Errorf("finding %+v: want money at risk and a detail", f)
				}
			}
			if risk != res.MoneyAtRisk {
				t.Errorf("money at risk %d, findings sum to %d", res.MoneyAtRisk, risk)
			}
		})
	}
}
