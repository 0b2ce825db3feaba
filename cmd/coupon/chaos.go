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
)

func init() {
	commands["chaos"] = command{"chaos   run [flags]     break a stack of its own on purpose and check that no money or stock is lost", chaosCmd}
}

// chaosCmd runs `coupon chaos run`: exit 0 when every invariant held, 1 on
// a violation, 2 when the run could not judge (the stack did not start, a
// scenario could not reach its checks).
func chaosCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(os.Stderr, "usage: coupon chaos run [--scenario NAME|all] [--duration D] [--seed N] [--report FILE] [--bin DIR] [--keep]")
		fmt.Fprintln(os.Stderr, "scenarios: all, "+strings.Join(chaos.ScenarioNames(), ", "))
		return exitCode(2, errors.New(""))
	}
	fs := flag.NewFlagSet("chaos run", flag.ContinueOnError)
	scenario := fs.String("scenario", "all", "scenario to run, a comma-separated list, or all: "+strings.Join(chaos.ScenarioNames(), ", "))
	duration := fs.Duration("duration", 5*time.Second, "workload length of each scenario; faults fall inside it")
	seed := fs.Uint64("seed", 1, "seed of the workload and the fault timings")
	report := fs.String("report", "", "write the JSON report to this file")
	markdown := fs.Bool("markdown", false, "also print the summary as a Markdown table (the README keeps the last smoke run's)")
	bin := fs.String("bin", "", "directory with prebuilt coupon, coordinator and shop binaries (make build's bin/); empty builds them")
	dir := fs.String("dir", "", "run directory for data, configs and logs (default: a new temporary one)")
	keep := fs.Bool("keep", false, "keep the run directory (it is always kept when something failed)")
	quiesce := fs.Duration("quiesce", 90*time.Second, "how long to wait for DTM to finish every transaction")
	logLevel := fs.String("log", "info", "progress log level on stderr")
	if err := fs.Parse(args[1:]); err != nil {
		return exitCode(2, err)
	}
	rep, err := chaos.Run(ctx, chaos.Options{
		Scenarios: strings.Split(*scenario, ","),
		Duration:  *duration,
		Seed:      *seed,
		Quiesce:   *quiesce,
		Stack:     chaos.StackOptions{BinDir: *bin, Dir: *dir, Keep: *keep},
		Log:       newLogger(*logLevel),
	})
	if rep != nil {
		if werr := rep.WriteTable(os.Stdout); werr != nil && err == nil {
			err = werr
		}
		if *markdown {
			fmt.Println()
			rep.WriteMarkdown(os.Stdout)
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
		return exitCode(2, err)
	}
	if rep.Violations > 0 {
		return exitCode(1, fmt.Errorf("%d invariant violation(s)", rep.Violations))
	}
	return nil
}
