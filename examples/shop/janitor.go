package shop

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/opencoupon/coupon/internal/janitor"
)

// CleanBarriers runs j once under a MySQL advisory lock (GET_LOCK) on
// lockDB, so that of all the shop's replicas one cleans at a time; the
// others return ran false at once. The lock is named after lockDB's
// database, so shops on one MySQL server do not wait for each other. It
// belongs to one connection and goes with it, so a replica that dies while
// cleaning frees it.
func CleanBarriers(ctx context.Context, lockDB *sql.DB, j *janitor.Janitor) (st janitor.Stats, ran bool, err error) {
	conn, err := lockDB.Conn(ctx)
	if err != nil {
		return st, false, fmt.Errorf("clean barriers: %w", err)
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(CONCAT('shop_barrier_janitor:', DATABASE()), 0)`).Scan(&got); err != nil {
		return st, false, fmt.Errorf("clean barriers: take lock: %w", err)
	}
	if got.Int64 != 1 {
		return st, false, nil
	}
	defer func() {
		// A fresh context: the lock must go even when ctx ended.
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), `DO RELEASE_LOCK(CONCAT('shop_barrier_janitor:', DATABASE()))`); rerr != nil && err == nil {
			err = fmt.Errorf("clean barriers: release lock: %w", rerr)
		}
	}()
	st, err = j.RunOnce(ctx)
	if err != nil {
		return st, true, fmt.Errorf("clean barriers: %w", err)
	}
	return st, true, nil
}
