package dtmstore_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/sql/dtmstore"
)

func TestStatements(t *testing.T) {
	stmts, err := dtmstore.Statements()
	if err != nil {
		t.Fatal(err)
	}
	if len(stmts) != 3 {
		t.Fatalf("got %d statements, want 3 (trans_global, trans_branch_op, kv)", len(stmts))
	}
}

// TestApplyTwice applies the DDL twice to a fresh database: it must be
// idempotent and name no database of its own.
func TestApplyTwice(t *testing.T) {
	name := testenv.Unique(t)
	db, err := sql.Open("mysql", testenv.MustDatabase(t, name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 {
		if err := dtmstore.Apply(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?", name).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("%s has %d tables, want 3", name, n)
	}
}
