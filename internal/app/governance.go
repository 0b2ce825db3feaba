package app

import (
	"context"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/rpc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Deadlines bound how long the server works on a call, whatever deadline
// the client sent (the earlier one wins). Zero fields take the defaults;
// a negative one means no server-side bound.
type Deadlines struct {
	User   time.Duration // user-side CouponService calls; default 500ms
	Branch time.Duration // TCC/Saga branch calls; default 3s
	Admin  time.Duration // AdminService and anything else; default 5s
	// Methods override per method, keyed as "CouponService/ClaimCoupon" or
	// by full method name.
	Methods map[string]time.Duration
}

// Limits are the governance limits of the gRPC server.
type Limits struct {
	// MaxConcurrent caps the calls of one method in flight at once; a call
	// over it is refused at once with Unavailable (retry elsewhere or
	// later). Zero takes the default (1024), negative disables.
	MaxConcurrent int
	// Methods override MaxConcurrent per method.
	Methods map[string]int
	// MaxRecvBytes caps a request message (default 1 MiB); MaxSendBytes a
	// response (default 16 MiB); MaxHeaderBytes the request metadata
	// (default 16 KiB). Zero takes the default.
	MaxRecvBytes   int
	MaxSendBytes   int
	MaxHeaderBytes int
	// MaxConcurrentStreams caps calls per client connection (0: gRPC's default).
	MaxConcurrentStreams uint32
}

// Defaults of the governance settings.
const (
	DefaultUserDeadline   = 500 * time.Millisecond
	DefaultBranchDeadline = 3 * time.Second
	DefaultAdminDeadline  = 5 * time.Second
	DefaultMaxConcurrent  = 1024
	DefaultMaxRecvBytes   = 1 << 20
	DefaultMaxSendBytes   = 16 << 20
	DefaultMaxHeaderBytes = 16 << 10
)

func orDefault[T int | float64 | time.Duration](v, d T) T {
	if v == 0 {
		return d
	}
	return v
}

// deadlineFor is the server-side bound of method (0: none).
func (d Deadlines) deadlineFor(method string) time.Duration {
	mk := methodKey(method)
	for k, v := range d.Methods {
		if methodKey(k) == mk {
			return max(v, 0)
		}
	}
	var v time.Duration
	switch {
	case auth.IsBranch(method):
		v = orDefault(d.Branch, DefaultBranchDeadline)
	case strings.HasPrefix(method, "/"+couponv1.CouponService_ServiceDesc.ServiceName+"/"):
		v = orDefault(d.User, DefaultUserDeadline)
	default:
		v = orDefault(d.Admin, DefaultAdminDeadline)
	}
	return max(v, 0)
}

// deadline bounds the call by its method's server-side deadline. The
// answer goes back at the deadline even when a dependency client does not
// honour the context: the handler then finishes on its own (it holds its
// concurrency slot until it does), and the caller retries with the same
// idempotency key. What such a handler finally returns reaches no client
// and no error map, so it is logged here.
func (a *App) deadline(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	d := a.cfg.Deadlines.deadlineFor(info.FullMethod)
	if d <= 0 {
		return h(ctx, req)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	type result struct {
		resp any
		err  error
	}
	done := make(chan result, 1)
	// taken decides, once, who has the handler's result: the caller (the
	// handler finished first) or nobody (the deadline came first).
	var taken atomic.Bool
	finish := func(r result) {
		if taken.CompareAndSwap(false, true) {
			done <- r
			return
		}
		if r.err != nil {
			a.log.WarnContext(ctx, "call past its deadline ended in an error", "method", info.FullMethod, "err", r.err)
		}
	}
	a.detached.Add(1)
	go func() {
		defer a.detached.Done()
		defer cancel()
		defer func() {
			if r := recover(); r != nil {
				a.log.ErrorContext(ctx, "panic", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				finish(result{err: rpc.ErrPanic})
			}
		}()
		resp, err := h(ctx, req)
		finish(result{resp, err})
	}()
	select {
	case r := <-done:
		return r.resp, r.err
	case <-ctx.Done():
		if !taken.CompareAndSwap(false, true) { // finished just in time
			r := <-done
			return r.resp, r.err
		}
		a.log.WarnContext(ctx, "call past its deadline; answered, handler still running", "method", info.FullMethod, "deadline", d)
		return nil, ctx.Err()
	}
}

// concurrency counts calls in flight per method.
type concurrency struct {
	cfg      Limits
	inflight map[string]*atomic.Int64 // filled once for every registered method
	limit    map[string]int64
}

func newConcurrency(cfg Limits, s *grpc.Server) *concurrency {
	c := &concurrency{cfg: cfg, inflight: map[string]*atomic.Int64{}, limit: map[string]int64{}}
	for svc, info := range s.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			n := orDefault(cfg.MaxConcurrent, DefaultMaxConcurrent)
			for k, v := range cfg.Methods {
				if methodKey(k) == methodKey(full) {
					n = v
				}
			}
			c.inflight[full] = new(atomic.Int64)
			c.limit[full] = int64(n)
		}
	}
	return c
}

func (c *concurrency) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	n, limit := c.inflight[info.FullMethod], c.limit[info.FullMethod]
	if n == nil || limit <= 0 {
		return h(ctx, req)
	}
	if n.Add(1) > limit {
		n.Add(-1)
		e := participant.Errorf(participant.EUNAVAILABLE, participant.ReasonUnavailable, "too many concurrent %s calls; retry", info.FullMethod)
		e.Metadata = map[string]string{"method": info.FullMethod, "limit": "concurrency"}
		return nil, e
	}
	defer n.Add(-1)
	return h(ctx, req)
}

// recoverer turns a panic of the interceptors inside it or of the handler
// into rpc.ErrPanic, logged here with its stack.
func (a *App) recoverer(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			a.log.ErrorContext(ctx, "panic", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			err = rpc.ErrPanic
		}
	}()
	return h(ctx, req)
}
