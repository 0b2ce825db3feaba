package cli_test

import (
	"errors"
	"flag"
	"fmt"
	"testing"

	"github.com/opencoupon/coupon/internal/cli"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 0},
		{"plain error", errors.New("boom"), 1},
		{"chosen status", cli.Exit(2, errors.New("bad flag")), 2},
		{"findings", cli.Exit(1, errors.New("3 open findings")), 1},
		{"wrapped chosen status", fmt.Errorf("run: %w", cli.Exit(3, errors.New("x"))), 3},
		{"help", flag.ErrHelp, 2},
		{"help with a chosen status", cli.Exit(1, flag.ErrHelp), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cli.Status(tt.err); got != tt.want {
				t.Errorf("Status(%v) = %d; want %d", tt.err, got, tt.want)
			}
		})
	}
}
