package coordinator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/go-sql-driver/mysql"
)

func TestRetrier(t *testing.T) {
	deadlock := &mysql.MySQLError{Number: errDeadlock, Message: "Deadlock found"}
	other := errors.New("current status 'failed', cannot submit")
	tests := []struct {
		name      string
		failures  []any // what the first attempts return, or panicWith to panic
		safe      bool
		wantCalls int
		wantRes   any
		wantPanic bool
	}{
		{"success", nil, true, 1, "ok", false},
		{"returned deadlock retried", []any{deadlock}, true, 2, "ok", false},
		{"panicked deadlock retried", []any{panicWith{deadlock}, panicWith{deadlock}}, true, 3, "ok", false},
		{"retries exhausted", []any{deadlock, deadlock, deadlock, deadlock}, true, 4, deadlock, false},
		{"panic kept when exhausted", []any{panicWith{deadlock}, panicWith{deadlock}, panicWith{deadlock}, panicWith{deadlock}}, true, 4, nil, true},
		{"unsafe not retried", []any{deadlock}, false, 1, deadlock, false},
		{"other error not retried", []any{other}, true, 1, other, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := retrier{retries: 3, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			calls := 0
			op := func() any {
				calls++
				if calls <= len(tt.failures) {
					if p, ok := tt.failures[calls-1].(panicWith); ok {
						panic(p.err)
					}
					return tt.failures[calls-1]
				}
				return "ok"
			}
			var res any
			panicked := func() (panicked bool) {
				defer func() { panicked = recover() != nil }()
				res = r.do(context.Background(), "Test", "gid", op, func() bool { return tt.safe })
				return false
			}()
			if calls != tt.wantCalls {
				t.Errorf("op ran %d times, want %d", calls, tt.wantCalls)
			}
			if panicked != tt.wantPanic {
				t.Errorf("panicked = %v, want %v", panicked, tt.wantPanic)
			}
			if !tt.wantPanic && res != tt.wantRes {
				t.Errorf("result = %v, want %v", res, tt.wantRes)
			}
		})
	}
}

// panicWith makes the test op panic with err, as DTM's store does.
type panicWith struct{ err error }
