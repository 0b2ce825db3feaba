package ctxtime_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/ctxtime"
)

func TestSleep(t *testing.T) {
	if err := ctxtime.Sleep(t.Context(), time.Millisecond); err != nil {
		t.Fatalf("sleep: %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := ctxtime.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("sleep on a cancelled context: %v, want context.Canceled", err)
	}
}
