package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/opencoupon/coupon/internal/bench/claimbench"
	"github.com/opencoupon/coupon/internal/bench/eventbench"
	"github.com/opencoupon/coupon/internal/bench/reconcilebench"
	"github.com/opencoupon/coupon/internal/bench/tccbench"
	"github.com/opencoupon/coupon/internal/cli"
)

// benches maps a benchmark's name to its entry point.
var benches = map[string]func(ctx context.Context, args []string, out io.Writer) error{
	"claim":     claimbench.Main,
	"events":    eventbench.Main,
	"reconcile": reconcilebench.Main,
	"tcc":       tccbench.Main,
}

func bench(ctx context.Context, args []string) error {
	names := make([]string, 0, len(benches))
	for n := range benches {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(args) == 0 {
		return cli.Exit(2, fmt.Errorf("usage: couponlab bench <%s> [flags]", strings.Join(names, "|")))
	}
	run, ok := benches[args[0]]
	if !ok {
		return cli.Exit(2, fmt.Errorf("unknown benchmark %q (one of %s)", args[0], strings.Join(names, ", ")))
	}
	return run(ctx, args[1:], os.Stdout)
}
