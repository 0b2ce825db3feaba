package reconcile

import (
	"context"
	"errors"
	"testing"

	"github.com/opencoupon/coupon/internal/testenv"
)

// TestMySQLLocker: one holder at a time, and the lock frees on Unlock.
func TestMySQLLocker(t *testing.T) {
	ctx := context.Background()
	db, err := OpenDB(ctx, testenv.MustDatabase(t, testenv.Unique(t)+"_lock"), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := &mysqlLocker{db: db}
	key := "test-" + testenv.Unique(t)
	a, err := l.Lock(ctx, key)
	if err != nil {
		t.Fatalf("first Lock: %v", err)
	}
	if _, err := l.Lock(ctx, key); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v; want ErrLocked", err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	b, err := l.Lock(ctx, key)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	_ = b.Unlock(ctx)
}
