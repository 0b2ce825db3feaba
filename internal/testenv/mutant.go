package testenv

import (
	"os/exec"
	"strings"
	"testing"
)

// MutantOverlay writes the mutant of one of tools/mutate's mutations (a
// deliberate, one-line money bug) into a temporary directory of tb and
// returns the path of the overlay file that puts it in place of the real
// source, for `go build -overlay` or `go test -c -overlay`. Tests that
// prove a checker can fail build their broken binary with it, so the
// production code carries no test hooks.
func MutantOverlay(tb testing.TB, id string) string {
	tb.Helper()
	cmd := exec.Command("go", "run", "github.com/opencoupon/coupon/tools/mutate", "-only", id, "-overlay", tb.TempDir())
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		tb.Fatalf("write the overlay of mutation %s: %v\n%s", id, err, stderr)
	}
	return strings.TrimSpace(string(out))
}
