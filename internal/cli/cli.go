// Package cli runs a binary made of subcommands: the usage listing, the
// signal-cancelled context and the documented exit statuses. The server
// (cmd/coupon) and the lab (cmd/couponlab) share it so that both treat
// flags, signals and exit codes alike.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// Command is one subcommand: what it is for (one line for usage) and what runs it.
type Command struct {
	Usage string
	Run   func(ctx context.Context, args []string) error
}

// ExitError ends the process with a chosen status (a command's documented
// exit codes, e.g. 1 for findings and 2 for an error). An empty message
// exits without printing one, for a command that printed its own usage.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit makes err end the process with code.
func Exit(code int, err error) error { return &ExitError{Code: code, Err: err} }

// Status is the status Main exits with when a command returns err: 0 for
// nil, 2 for a help request, an ExitError's code, else 1.
func Status(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 2
	case errors.As(err, &ee):
		return ee.Code
	}
	return 1
}

// Main runs the command named by os.Args[1] with the rest of the
// arguments, until it returns or SIGINT or SIGTERM cancels its context, and
// exits with its Status. prog names the binary in usage and error lines.
func Main(prog string, commands map[string]Command) {
	if len(os.Args) < 2 {
		usage(prog, commands)
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	if name == "-h" || name == "--help" || name == "help" {
		usage(prog, commands)
		return
	}
	cmd, ok := commands[name]
	if !ok {
		usage(prog, commands)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cmd.Run(ctx, args)
	stop()
	if err == nil {
		return
	}
	var ee *ExitError
	if !errors.Is(err, flag.ErrHelp) && (!errors.As(err, &ee) || ee.Err != nil && ee.Err.Error() != "") {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", prog, name, err)
	}
	os.Exit(Status(err))
}

func usage(prog string, commands map[string]Command) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s <command> [flags]\n", prog)
	for _, n := range names {
		fmt.Fprintln(os.Stderr, "  "+commands[n].Usage)
	}
}

// NewLogger is a JSON logger on stderr at level (debug, info, warn or
// error; anything else is info).
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
