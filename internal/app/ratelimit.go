package app

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/rpc"
)

// CallerHeader names the calling service; without it the caller is its
// peer address.
const CallerHeader = "x-caller-id"

// RateLimit caps each caller's request rate with a token bucket.
type RateLimit struct {
	PerCaller float64 // requests per second; 0 disables
	Burst     int
}

// exempt are never limited: DTM must be able to finish what it started.
var exempt = map[string]bool{
	"/coupon.v1.CouponService/ConsumeCoupon": true,
	"/coupon.v1.CouponService/UnlockCoupon":  true,
}

type limiter struct {
	cfg RateLimit
	mu  sync.Mutex
	m   map[string]*rate.Limiter
}

const maxCallers = 100_000

func (l *limiter) get(caller string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[caller]
	if lim == nil {
		if len(l.m) >= maxCallers {
			l.m = map[string]*rate.Limiter{} // forget idle callers wholesale
		}
		lim = rate.NewLimiter(rate.Limit(l.cfg.PerCaller), max(l.cfg.Burst, 1))
		l.m[caller] = lim
	}
	return lim
}

func callerOf(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(CallerHeader); len(v) > 0 && v[0] != "" {
			return "id:" + v[0]
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return "ip:" + host
		}
		return "ip:" + p.Addr.String()
	}
	return "unknown"
}

func (l *limiter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if l.cfg.PerCaller <= 0 || exempt[info.FullMethod] {
		return h(ctx, req)
	}
	caller := callerOf(ctx)
	if !l.get(caller).Allow() {
		st := status.New(codes.ResourceExhausted, "rate limit of "+caller+" exceeded")
		if d, err := st.WithDetails(
			&errdetails.ErrorInfo{Reason: participant.ReasonRateLimited, Domain: rpc.Domain, Metadata: map[string]string{"caller": caller}},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Duration(float64(time.Second) / l.cfg.PerCaller))},
		); err == nil {
			st = d
		}
		return nil, st.Err()
	}
	return h(ctx, req)
}
