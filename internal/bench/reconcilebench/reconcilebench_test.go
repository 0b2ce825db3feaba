package reconcilebench_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/opencoupon/coupon/internal/bench/reconcilebench"
)

// TestSmall runs the benchmark on a small day: it verifies its own
// findings, so a run that returns no error found exactly what it injected.
func TestSmall(t *testing.T) {
	var out bytes.Buffer
	if err := reconcilebench.Main(context.Background(), []string{"--orders", "2000", "--dir", t.TempDir()}, &out); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	for _, s := range []string{"rows/s", "peak RSS", "11 findings as injected"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
}
