package redis

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// ErrRedisDown is the answer while the breaker is open.
var ErrRedisDown = errors.New("redis unreachable: failing fast for a moment")

// breaker fails Redis commands fast while Redis does not answer: after
// failAfter consecutive connection failures (timeouts, resets, refused
// dials) it answers ErrRedisDown at once for openFor, then lets calls
// through again, reopening on the next failure. Without it every claim
// would wait out a read timeout while Redis hangs, and pile up behind the
// others. Redis error replies and misses are answers, not failures.
type breaker struct {
	failAfter int32
	openFor   time.Duration
	failures  atomic.Int32
	openUntil atomic.Int64 // unix nanoseconds
	now       func() time.Time
}

func newBreaker() *breaker {
	return &breaker{failAfter: 5, openFor: time.Second, now: time.Now}
}

func (b *breaker) open() bool { return b.now().UnixNano() < b.openUntil.Load() }

func (b *breaker) record(err error) {
	if !connFailure(err) {
		b.failures.Store(0)
		return
	}
	if b.failures.Add(1) >= b.failAfter {
		b.openUntil.Store(b.now().Add(b.openFor).UnixNano())
		b.failures.Store(b.failAfter - 1) // one more failure after it closes reopens it
	}
}

func connFailure(err error) bool {
	if err == nil || errors.Is(err, goredis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, goredis.ErrPoolTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, goredis.ErrClosed)
}

func (b *breaker) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if b.open() {
			return nil, ErrRedisDown
		}
		c, err := next(ctx, network, addr)
		if err != nil { // a dial that works proves nothing: a hung server accepts
			b.record(err)
		}
		return c, err
	}
}

func (b *breaker) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if b.open() {
			cmd.SetErr(ErrRedisDown)
			return ErrRedisDown
		}
		err := next(ctx, cmd)
		if ctx.Err() == nil { // a caller's own deadline says nothing of Redis
			b.record(err)
		}
		return err
	}
}

func (b *breaker) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if b.open() {
			for _, c := range cmds {
				c.SetErr(ErrRedisDown)
			}
			return ErrRedisDown
		}
		err := next(ctx, cmds)
		if ctx.Err() == nil {
			b.record(err)
		}
		return err
	}
}
