package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/opencoupon/coupon/internal/cli"
)

// TestUsageErrors checks the lab's commands refuse what they cannot run
// with their documented status and say what they want, without starting
// anything.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name     string
		cmd      string
		args     []string
		want     int
		wantText string
	}{
		{"bench without a name", "bench", nil, 2, "usage: couponlab bench <claim|events|reconcile|tcc>"},
		{"unknown benchmark", "bench", []string{"nope"}, 2, `unknown benchmark "nope" (one of claim, events, reconcile, tcc)`},
		{"chaos without run", "chaos", nil, 2, ""},
		{"chaos unknown flag", "chaos", []string{"run", "--nope"}, 2, "nope"},
		{"demo unknown flag", "demo", []string{"--nope"}, 1, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, ok := commands[tt.cmd]
			if !ok {
				t.Fatalf("couponlab has no %q command", tt.cmd)
			}
			null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer null.Close()
			stdout, stderr := os.Stdout, os.Stderr
			os.Stdout, os.Stderr = null, null
			err = cmd.Run(context.Background(), tt.args)
			os.Stdout, os.Stderr = stdout, stderr
			if got := cli.Status(err); got != tt.want {
				t.Fatalf("exit status %d (%v); want %d", got, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not contain %q", err, tt.wantText)
			}
		})
	}
}
