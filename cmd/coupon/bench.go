package main

import (
	"context"
	"fmt"
	"os"

	"github.com/opencoupon/coupon/internal/bench/claimbench"
	"github.com/opencoupon/coupon/internal/bench/tccbench"
)

// bench runs one of the benchmarks: claim or tcc.
func bench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: coupon bench <claim|tcc> [flags]")
	}
	switch args[0] {
	case "claim":
		return claimbench.Main(ctx, args[1:], os.Stdout)
	case "tcc":
		return tccbench.Main(ctx, args[1:], os.Stdout)
	}
	return fmt.Errorf("unknown benchmark %q (claim or tcc)", args[0])
}
