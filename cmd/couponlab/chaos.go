package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/opencoupon/coupon/chaos"
	"github.com/opencoupon/coupon/internal/cli"
)

// chaosCmd runs `couponlab chaos run`: exit 0 when every invariant held and
// every scenario was exercised, 1 on a violation or a scenario whose
// commits fell below the floor, 2 when the run could not judge (the stack did not start, a
// scenario could not reach its checks).
func chaosCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(os.Stderr, "usage: couponlab chaos run [--scenario NAME|all] [--duration D] [--seed N|0] [--callers N] [--report FILE] [--markdown-file FILE] [--bin DIR] [--keep]")
		fmt.Fprintln(os.Stderr, "scenarios: all, "+strings.Join(chaos.ScenarioNames(), ", "))
		return cli.Exit(2, errors.New(""))
	}
	fs := flag.NewFlagSet("chaos run", flag.ContinueOnError)
	scenario := fs.String("scenario", "all", "scenario to run, a comma-separated list, or all: "+strings.Join(chaos.ScenarioNames(), ", "))
	duration := fs.Duration("duration", 5*time.Second, "workload length of each scenario; faults fall inside it")
	seed := fs.Uint64("seed", 1, "seed of the workload and the fault timings; 0 takes one from the clock (printed first)")
	callers := fs.Int("callers", 0, "concurrent callers of the busiest load profile (the others in proportion); 0 keeps each scenario's own")
	report := fs.String("report", "", "write the JSON report to this file")
	markdown := fs.Bool("markdown", false, "also print the summary as a Markdown table (docs/decisions keep the last smoke run's)")
	markdownFile := fs.String("markdown-file", "", "write the seed, the summary and the Markdown table to this file")
	bin := fs.String("bin", "", "directory with prebuilt coupon, coordinator and shop binaries (make build's bin/); empty builds them")
	dir := fs.String("dir", "", "run directory for data, configs and logs (default: a new temporary one)")
	keep := fs.Bool("keep", false, "keep the run directory (it is always kept when something failed)")
	quiesce := fs.Duration("quiesce", 90*time.Second, "how long to wait for DTM to finish every transaction")
	logLevel := fs.String("log", "info", "progress log level on stderr")
	if err := fs.Parse(args[1:]); err != nil {
		return cli.Exit(2, err)
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	// First, so that any run, even one that never finishes, can be replayed.
	fmt.Printf("chaos: seed %d (replay: couponlab chaos run --scenario %s --duration %s --seed %d)\n", *seed, *scenario, *duration, *seed)
	rep, err := chaos.Run(ctx, chaos.Options{
		Scenarios: strings.Split(*scenario, ","),
		Duration:  *duration,
		Seed:      *seed,
		Callers:   *callers,
		Quiesce:   *quiesce,
		Stack:     chaos.StackOptions{BinDir: *bin, Dir: *dir, Keep: *keep},
		Log:       cli.NewLogger(*logLevel),
	})
	if rep != nil {
		if werr := rep.WriteTable(os.Stdout); werr != nil && err == nil {
			err = werr
		}
		if *markdown {
			fmt.Println()
			rep.WriteMarkdown(os.Stdout)
		}
		if *markdownFile != "" {
			if werr := writeMarkdown(rep, *markdownFile); werr != nil && err == nil {
				err = werr
			}
		}
		if *report != "" {
			if werr := rep.WriteJSON(*report); werr != nil && err == nil {
				err = werr
			}
		}
		if rep.Dir != "" {
			fmt.Fprintf(os.Stderr, "run directory kept: %s\n", rep.Dir)
		}
	}
	if err != nil {
		return cli.Exit(2, err)
	}
	if rep.Failed() {
		return cli.Exit(1, fmt.Errorf("%d invariant violation(s), %d scenario(s) not exercised", rep.Violations, rep.NotExercised))
	}
	return nil
}

// writeMarkdown writes the run's Markdown report: seed, summary, table.
func writeMarkdown(rep *chaos.Report, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("write markdown report: %w", err)
	}
	fmt.Fprintf(f, "# Chaos run, seed %d\n\nStarted %s, %s per scenario, took %s.\n\n%s\n\n",
		rep.Seed, rep.Started.Format(time.RFC3339), rep.Duration, rep.Took, rep.Summary())
	rep.WriteMarkdown(f)
	if err := f.Close(); err != nil {
		return fmt.Errorf("write markdown report: %w", err)
	}
	return nil
}
