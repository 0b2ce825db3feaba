// Package claimbench is a benchmark of the coupon service (work in progress).
package claimbench

import (
	"context"
	"errors"
	"io"
)

// Main runs the benchmark with command-line args and prints its report to out.
func Main(ctx context.Context, args []string, out io.Writer) error {
	return errors.New("not implemented yet")
}
