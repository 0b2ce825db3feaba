package reconcile_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/reconcile"
	"github.com/opencoupon/coupon/reconcile/gen"
)

// TestReportSelfContained renders a report, checks it loads nothing from
// outside, and, where Chromium is installed, that a browser opening it
// from file:// runs its script (the search counter is filled in).
func TestReportSelfContained(t *testing.T) {
	files, want, err := gen.Write(t.TempDir(), gen.Spec{Date: day, Orders: 300, Inject: 1, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	j := reconcile.Job{Options: reconcile.Options{Date: day, Grace: 10 * time.Minute, SpillDir: t.TempDir(), Partitions: 8}, Sources: csvSources(files), Out: out}
	if _, err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(out, reconcile.FileReport)
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	if m := regexp.MustCompile(`(?i)(src|href)\s*=|@import|url\(`).FindString(html); m != "" {
		t.Errorf("report refers to something outside itself: %q", m)
	}
	for _, s := range []string{"<svg", "ORPHAN_LOCK", `id="q"`, "Money at risk"} {
		if !strings.Contains(html, s) {
			t.Errorf("report lacks %q", s)
		}
	}
	md, err := os.ReadFile(filepath.Join(out, reconcile.FileSummary))
	if err != nil || !strings.Contains(string(md), "| ORPHAN_LOCK | 1 | 1 | 0 |") {
		t.Errorf("summary.md: %v\n%s", err, md)
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium: the browser check is skipped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(), "--dump-dom", "file://"+page)
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	n := len(want.Findings)
	if wantText := strconv.Itoa(n) + " of " + strconv.Itoa(n) + " shown"; !strings.Contains(string(dom), wantText) {
		t.Errorf("the page's script did not run in the browser: %q not in the DOM", wantText)
	}
}
