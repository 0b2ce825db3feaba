// Package ctxtime holds the one wait that ends early when its context does,
// shared by the domain, the template cache, chaos and the benchmarks.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx is done and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
