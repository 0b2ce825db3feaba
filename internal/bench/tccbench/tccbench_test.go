package tccbench_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/bench/tccbench"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
)

// TestMainReport runs every scenario for a second against a real coordinator and
// checks the report's shape: it keeps `couponlab bench tcc` working.
func TestMainReport(t *testing.T) {
	dtm := dtmtest.Start(t)
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	prefix := "tccbt" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := tccbench.Main(ctx, []string{
		"--dtm", dtm.GRPCAddr, "--store", "mysql", "--duration", "1s", "--warmup", "200ms",
		"--rounds", "2", "--concurrency", "8", "--max-rate", "1000", "--conns", "4", "--coupon-conns", "4", "--prefix", prefix,
		"--mysql", testenv.MySQLServer(), "--redis", testenv.RedisAddr(),
	}, &out)
	t.Logf("report:\n%s", out.String())
	if err != nil {
		t.Fatalf("Main: %v", err)
	}

	line := regexp.MustCompile(`^tcc store=mysql scenario=(\S+)\s+tx=(\d+)\s+tx/s=(\d+)\s+p50=\S+ms p95=\S+ms p99=\S+ms errors=(\d+) settle=\S+$`)
	var scenarios []string
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for _, l := range lines[:len(lines)-1] {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("report line %q does not have the expected shape", l)
			continue
		}
		scenarios = append(scenarios, m[1])
		if n, _ := strconv.Atoi(m[2]); n == 0 {
			t.Errorf("scenario %s committed no transaction", m[1])
		}
		if m[4] != "0" {
			t.Errorf("scenario %s had %s errors", m[1], m[4])
		}
	}
	if got, want := strings.Join(scenarios, ","), "coupon,coupon+payment,textbook"; got != want {
		t.Errorf("scenarios reported = %s, want %s", got, want)
	}
	if last := lines[len(lines)-1]; !regexp.MustCompile(`^ratio coupon/textbook=\d+\.\d\d$`).MatchString(last) {
		t.Errorf("last line = %q, want the ratio", last)
	}
}

func TestMainRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no coordinator", []string{}, "--dtm is required"},
		{"unknown scenario", []string{"--dtm", "x:1", "--scenarios", "coupon,saga"}, `unknown scenario "saga"`},
		{"scenario twice", []string{"--dtm", "x:1", "--scenarios", "coupon,coupon"}, "given twice"},
		{"bad prefix", []string{"--dtm", "x:1", "--prefix", "Bench-1"}, "--prefix"},
		{"zero duration", []string{"--dtm", "x:1", "--duration", "0s"}, "--duration"},
		{"extra argument", []string{"--dtm", "x:1", "now"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := tccbench.Main(context.Background(), tt.args, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Main(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}
