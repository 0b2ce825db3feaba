package mysqllock_test

import (
	"context"
	"database/sql"
	"testing"

	_ "github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/internal/jobs"
	"github.com/opencoupon/coupon/internal/jobs/mysqllock"
	"github.com/opencoupon/coupon/internal/testenv"
)

var _ jobs.Locker = (*mysqllock.Locker)(nil)

// TestLocker: one holder at a time, and the lock frees on unlock.
func TestLocker(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB")
	}
	ctx := context.Background()
	db, err := sql.Open("mysql", testenv.MustDatabase(t, testenv.Unique(t)+"_lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := &mysqllock.Locker{DB: db}
	key := "test-" + testenv.Unique(t)
	unlock, ok, err := l.Lock(ctx, key, 0)
	if err != nil || !ok {
		t.Fatalf("first Lock = %v, %v; want the lock", ok, err)
	}
	if _, ok, err := l.Lock(ctx, key, 0); ok || err != nil {
		t.Fatalf("second Lock = %v, %v; want held elsewhere", ok, err)
	}
	unlock()
	unlock, ok, err = l.Lock(ctx, key, 0)
	if err != nil || !ok {
		t.Fatalf("Lock after unlock = %v, %v; want the lock", ok, err)
	}
	unlock()
}
