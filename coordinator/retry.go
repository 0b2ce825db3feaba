package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MySQL errors after which the failed statement or transaction has been
// rolled back and may simply be run again.
const (
	errLockWaitTimeout = 1205
	errDeadlock        = 1213
)

// retrier reruns DTM API calls that failed on a transient MySQL error.
type retrier struct {
	retries int
	log     *slog.Logger
}

// do runs op, which returns a result or an error as DTM's svc functions do,
// or panics as DTM's store does. While it fails transiently, safe says the
// failed attempt left nothing behind and attempts remain, it runs op again
// after a short backoff. It returns op's last result, or re-panics with its
// last panic for the recovery interceptor.
func (r retrier) do(ctx context.Context, method, gid string, op func() any, safe func() bool) any {
	for attempt := 1; ; attempt++ {
		res, p := catch(op)
		err, _ := res.(error)
		if p != nil {
			err = panicError(p)
		}
		if err == nil || !transient(err) || attempt > r.retries || ctx.Err() != nil || !safe() {
			if p != nil {
				panic(p)
			}
			return res
		}
		r.log.Warn("retrying after a transient store error",
			"method", method, "gid", gid, "attempt", attempt, "err", err)
		backoff := time.Duration(attempt) * 5 * time.Millisecond
		t := time.NewTimer(backoff + rand.N(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

func catch(op func() any) (res, panicked any) {
	defer func() {
		if x := recover(); x != nil {
			panicked = x
		}
	}()
	return op(), nil
}

func panicError(p any) error {
	if err, ok := p.(error); ok {
		return err
	}
	return fmt.Errorf("%v", p)
}

// transient reports whether err is a MySQL deadlock or lock wait timeout.
// DTM sometimes flattens errors into text ("dtm panic: Error 1213 ..."), so
// the driver's message format is matched too.
func transient(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == errDeadlock || me.Number == errLockWaitTimeout
	}
	msg := err.Error()
	for _, n := range []int{errDeadlock, errLockWaitTimeout} {
		if strings.Contains(msg, fmt.Sprintf("Error %d (", n)) || strings.Contains(msg, fmt.Sprintf("Error %d:", n)) {
			return true
		}
	}
	return false
}
