// Package mysqllock is a jobs.Locker over MySQL named locks (GET_LOCK),
// for jobs that run where only MySQL is configured.
package mysqllock

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Locker takes MySQL named locks in DB. A lock lives with one connection,
// so a replica that dies releases it; it has no TTL (the ttl of Lock is
// ignored), so jobs over it give it up after each round.
type Locker struct{ DB *sql.DB }

// MaxName is the longest lock name MySQL takes.
const MaxName = 64

// Lock takes the named lock without waiting; ok is false when another
// session holds it.
func (l *Locker) Lock(ctx context.Context, name string, _ time.Duration) (unlock func(), ok bool, err error) {
	conn, err := l.DB.Conn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lock %s: %w", name, err)
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, name).Scan(&got); err != nil {
		_ = conn.Close()
		return nil, false, fmt.Errorf("lock %s: %w", name, err)
	}
	if got.Int64 != 1 {
		_ = conn.Close()
		return nil, false, nil
	}
	return func() {
		// A fresh context: the lock must go even when the round's ended.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(ctx, `DO RELEASE_LOCK(?)`, name)
		// Closing the connection releases the lock in any case.
		_ = conn.Close()
	}, true, nil
}
