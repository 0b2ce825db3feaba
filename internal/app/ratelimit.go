package app

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// RateLimit caps each caller's request rate per method with a token bucket
// keyed by the authenticated identity (when auth is off, the peer address,
// or for calls through the HTTP gateway the HTTP client's address).
type RateLimit struct {
	// PerCaller and Burst are the limit of callers no Limit matches:
	// requests per second per identity and method; 0 disables. They do
	// not apply to branch methods, which have their own.
	PerCaller float64
	Burst     int
	// Branch and BranchBurst are the limit of branch calls (auth.Branches)
	// for callers no Limit matches, per identity and method: every branch
	// call may write barrier rows, so none is unlimited by default. Zero
	// takes the defaults; a negative Branch means unlimited.
	Branch      float64
	BranchBurst int
	// Limits set the rate of an identity or a role, optionally for some
	// methods only. The most specific match wins: identity+method,
	// identity, role+method, role; among a caller's roles the most generous.
	Limits []Limit
}

// Limit is one configured rate (an entry of ratelimit.limits). RPS 0
// means unlimited.
type Limit struct {
	Identity string `mapstructure:"identity" json:"identity"`
	Role     string `mapstructure:"role" json:"role"`
	// Methods narrow the limit, as "CouponService/ClaimCoupon" or the full
	// method name; empty: every method.
	Methods []string `mapstructure:"methods" json:"methods"`
	RPS     float64  `mapstructure:"rps" json:"rps"`
	Burst   int      `mapstructure:"burst" json:"burst"`
}

// Defaults of the branch calls' limit: generous beside the throughput of
// one order service (the TCC bench peaks near 1,200 transactions a second),
// but a bound on the barrier rows a caller can write with fresh gids.
const (
	DefaultBranchRPS   = 2000
	DefaultBranchBurst = 4000
)

// mustFinish are the branches that finish what DTM started: Confirm,
// Cancel, the Saga compensation and the return message's branch. Over their
// limit they answer Unavailable, which DTM retries, never a refusal.
var mustFinish = map[string]bool{
	couponv1.CouponService_ConsumeCoupon_FullMethodName:   true,
	couponv1.CouponService_UnlockCoupon_FullMethodName:    true,
	couponv1.CouponService_UseCouponRevert_FullMethodName: true,
	couponv1.CouponService_ReturnCoupon_FullMethodName:    true,
}

// methodKey normalises a configured or called method name for comparison:
// "/coupon.v1.CouponService/ClaimCoupon" and "CouponService/ClaimCoupon"
// are one key, case-insensitively (configuration keys are lower-cased).
func methodKey(s string) string {
	s = strings.ToLower(strings.TrimPrefix(s, "/"))
	return strings.TrimPrefix(s, "coupon.v1.")
}

type limiter struct {
	cfg RateLimit
	// forwarded names the HTTP client of a call through the gateway; nil
	// when there is none.
	forwarded forwarder
	mu        sync.Mutex
	m         map[string]*rate.Limiter // identity + "\x00" + method; nil: unlimited
}

// forwarder tells which HTTP client a call through the gateway came from
// (gateway.Forwarding); ok is false for any other call.
type forwarder interface {
	Client(ctx context.Context) (addr string, ok bool)
}

const maxBuckets = 100_000

func newLimiter(cfg RateLimit) *limiter {
	return &limiter{cfg: cfg, m: map[string]*rate.Limiter{}}
}

// rateFor resolves the configured rate of a caller for a method.
func (l *limiter) rateFor(c participant.Caller, method string) (rps float64, burst int) {
	best, rank := Limit{RPS: l.cfg.PerCaller, Burst: l.cfg.Burst}, 0
	if auth.IsBranch(method) {
		best = Limit{RPS: max(orDefault(l.cfg.Branch, DefaultBranchRPS), 0), Burst: orDefault(l.cfg.BranchBurst, DefaultBranchBurst)}
	}
	mk := methodKey(method)
	for _, x := range l.cfg.Limits {
		r := 0
		switch {
		case x.Identity != "" && x.Identity == c.Identity:
			r = 3
		case x.Role != "" && slices.Contains(c.Roles, x.Role):
			r = 1
		default:
			continue
		}
		if len(x.Methods) > 0 {
			if !slices.ContainsFunc(x.Methods, func(m string) bool { return methodKey(m) == mk }) {
				continue
			}
			r++
		}
		if r > rank || r == rank && rank > 0 && generous(x, best) {
			best, rank = x, r
		}
	}
	return best.RPS, best.Burst
}

// generous reports whether a allows more than b (0 RPS is unlimited).
func generous(a, b Limit) bool {
	return a.RPS == 0 || b.RPS != 0 && a.RPS > b.RPS
}

func (l *limiter) get(c participant.Caller, method string) *rate.Limiter {
	key := c.Identity + "\x00" + method
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxBuckets {
			l.m = map[string]*rate.Limiter{} // forget idle callers wholesale
		}
		if rps, burst := l.rateFor(c, method); rps > 0 {
			lim = rate.NewLimiter(rate.Limit(rps), max(burst, 1))
		}
		l.m[key] = lim
	}
	return lim
}

// callerOf is the authenticated caller; when auth is off, the HTTP
// client's address for a call through the gateway (whose calls all come
// from one loopback address), else the peer address.
func (l *limiter) callerOf(ctx context.Context) participant.Caller {
	if c, ok := participant.CallerFrom(ctx); ok {
		return c
	}
	if l.forwarded != nil {
		if addr, ok := l.forwarded.Client(ctx); ok {
			return participant.Caller{Identity: "ip:" + addr}
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return participant.Caller{Identity: "ip:" + host}
		}
		return participant.Caller{Identity: "ip:" + p.Addr.String()}
	}
	return participant.Caller{Identity: "unknown"}
}

// unary refuses calls over the caller's rate with ResourceExhausted,
// RATE_LIMITED, and the delay after which a retry would pass in the
// ErrorInfo metadata (retry_delay) and a RetryInfo. Branches that must
// finish answer Unavailable instead (reason RATE_LIMITED): a compensation
// answers only OK or a transient fault, and DTM retries it. The refusal is
// a domain error; rpc.UnaryErrors, outside, makes it the status.
func (l *limiter) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c := l.callerOf(ctx)
		lim := l.get(c, info.FullMethod)
		if lim == nil {
			return h(ctx, req)
		}
		now := time.Now()
		r := lim.ReserveN(now, 1)
		delay := r.DelayFrom(now)
		if r.OK() && delay == 0 {
			return h(ctx, req)
		}
		r.CancelAt(now)
		if !r.OK() || delay <= 0 {
			delay = time.Second
		}
		delay = delay.Round(time.Millisecond)
		code := participant.ERATELIMIT
		if mustFinish[info.FullMethod] {
			code = participant.EUNAVAILABLE
		}
		e := participant.Errorf(code, participant.ReasonRateLimited, "rate limit of %s for %s exceeded; retry after %s", c.Identity, info.FullMethod, delay)
		e.Metadata = map[string]string{"identity": c.Identity, "method": info.FullMethod, "retry_delay": delay.String()}
		e.RetryDelay = delay
		return nil, e
	}
}
