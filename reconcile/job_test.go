package reconcile_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/reconcile"
	"github.com/opencoupon/coupon/reconcile/gen"
)

// TestJobThroughState runs two consecutive days over the state database:
// the second carries the first's pending, the runs are recorded, and the
// output directory of a rerun replaces the old one whole.
func TestJobThroughState(t *testing.T) {
	db := mustState(t)
	dir := t.TempDir()
	files, want, err := gen.Write(dir, gen.Spec{Date: day, Orders: 200, Inject: 1, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "reports", "2026-03-10")
	j := reconcile.Job{
		Options: reconcile.Options{Date: day, Grace: 10 * time.Minute, PendingDays: 3, SpillDir: t.TempDir(), Partitions: 8},
		Sources: csvSources(files), SourceKey: reconcile.SourceKey("csv", dir), Out: out, State: db,
	}
	res, err := j.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Open != int64(len(want.Findings)) || res.Pending != int64(len(want.Pending)) {
		t.Fatalf("day 1: %d open, %d pending; want %d, %d", res.Open, res.Pending, len(want.Findings), len(want.Pending))
	}
	for _, f := range []string{reconcile.FileDiscrepancies, reconcile.FilePending, reconcile.FileSummary, reconcile.FileReport} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output %s: %v", f, err)
		}
	}
	stale := filepath.Join(out, "stale-file")
	if err := os.WriteFile(stale, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A rerun of day 1 replaces the directory; the previous pending is
	// only ever taken from the day before.
	j.Carried, j.Resolved = nil, nil
	if res, err = j.Run(context.Background()); err != nil || res.Rows.Carried != 0 {
		t.Fatalf("rerun: %v, carried %d; want no carry from the same day", err, res.Rows.Carried)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the rerun kept a file of the old directory: %v", err)
	}

	// Day 2: nothing new; the pending of day 1 is judged now.
	next := day.AddDate(0, 0, 1)
	empty, _, err := gen.Write(t.TempDir(), gen.Spec{Date: next, Seed: 10})
	if err != nil {
		t.Fatal(err)
	}
	j2 := reconcile.Job{
		Options: reconcile.Options{Date: next, Grace: 10 * time.Minute, PendingDays: 3, SpillDir: t.TempDir(), Partitions: 8},
		Sources: csvSources(empty), SourceKey: reconcile.SourceKey("csv", dir), Out: filepath.Join(t.TempDir(), "d2"), State: db,
	}
	res2, err := j2.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res2.Rows.Carried != int64(len(want.Pending)) || res2.Pending != 0 {
		t.Errorf("day 2: carried %d, pending %d; want %d, 0", res2.Rows.Carried, res2.Pending, len(want.Pending))
	}
	// Of day 1's in-flight orders the paid one settled; the two locks that
	// never did (one alone, one with a pending order) are orphans by day 2.
	if res2.Totals[reconcile.ClassOrphanLock].Count != 2 || res2.Findings != 2 {
		t.Errorf("day 2: %d findings, orphan locks %+v; want the 2 carried locks", res2.Findings, res2.Totals[reconcile.ClassOrphanLock])
	}
	runs, next2, err := reconcile.ListRuns(context.Background(), db, reconcile.Page{Size: 2})
	if err != nil || len(runs) != 2 || next2 == "" || runs[0].Date != "2026-03-11" || runs[0].Pending != 0 || runs[1].Pending != res.Pending {
		t.Fatalf("ListRuns = %+v, %q, %v", runs, next2, err)
	}
	rest, last, err := reconcile.ListRuns(context.Background(), db, reconcile.Page{Size: 2, After: next2})
	if err != nil || len(rest) != 1 || last != "" || rest[0].Date != "2026-03-10" || rest[0].Totals[reconcile.ClassOrphanLock].Count != 1 || rest[0].Open != res.Open {
		t.Fatalf("second page = %+v, %q, %v; want the first run alone", rest, last, err)
	}
	if ps, err := reconcile.RunPending(context.Background(), db, runs[1].ID); err != nil || len(ps) != len(want.Pending) {
		t.Errorf("RunPending of day 1 = %d orders, %v; want %d", len(ps), err, len(want.Pending))
	}
	got, err := reconcile.GetRun(context.Background(), db, runs[0].ID)
	if err != nil || got.Status != reconcile.RunDone || got.ReportPath != filepath.Join(j2.Out, reconcile.FileReport) || got.MoneyAtRisk != res2.MoneyAtRisk {
		t.Errorf("GetRun = %+v, %v", got, err)
	}
}

// TestJobFailsWhole: a bad input leaves no output and records a failed run.
func TestJobFailsWhole(t *testing.T) {
	db := mustState(t)
	files, _, err := gen.Write(t.TempDir(), gen.Spec{Date: day, Orders: 100, Inject: 1})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(files.Payments, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("p-bad,o-bad,CAPTURED,ten,2026-03-10T10:00:00Z\n")
	f.Close()
	parent := t.TempDir()
	j := reconcile.Job{
		Options: reconcile.Options{Date: day, Grace: 10 * time.Minute, SpillDir: t.TempDir(), Partitions: 8},
		Sources: csvSources(files), SourceKey: "csv:x", Out: filepath.Join(parent, "out"), State: db,
	}
	_, err = j.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `column 4 "amount"`) {
		t.Fatalf("Run = %v; want the bad amount", err)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("left behind in the output's parent: %v", left)
	}
	runs, _, err := reconcile.ListRuns(context.Background(), db, reconcile.Page{})
	if err != nil || len(runs) != 1 || runs[0].Status != reconcile.RunFailed || !strings.Contains(runs[0].Error, "amount") {
		t.Errorf("runs = %+v, %v; want one failed run with the error", runs, err)
	}
}
