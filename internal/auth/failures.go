package auth

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/peer"

	"github.com/opencoupon/coupon/participant"
)

// Defaults of the failed-authentication limit: ten failures in a row,
// then one more try a second.
const (
	DefaultFailureRPS   = 1
	DefaultFailureBurst = 10
)

// Clients names the HTTP client of a call that came through the gateway
// (gateway.Forwarding); ok is false for any other call.
type Clients interface {
	Client(ctx context.Context) (addr string, ok bool)
}

// Events counts failed authentications, and calls refused because their
// client failed too often, by surface: "grpc", or "http" for calls through
// the gateway (metrics.Metrics).
type Events interface {
	AuthFailed(surface string)
	AuthThrottled(surface string)
}

// maxFailureBuckets bounds the client addresses remembered.
const maxFailureBuckets = 100_000

// failures is a token bucket of failed authentications per client address.
// Only failures take tokens; a client with none left is refused before its
// credential is looked at, whatever it sends, until a token comes back.
type failures struct {
	rps   rate.Limit
	burst int
	now   func() time.Time

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newFailures(rps float64, burst int, now func() time.Time) *failures {
	if rps < 0 {
		return nil
	}
	if rps == 0 {
		rps = DefaultFailureRPS
	}
	if burst <= 0 {
		burst = DefaultFailureBurst
	}
	return &failures{rps: rate.Limit(rps), burst: burst, now: now, m: map[string]*rate.Limiter{}}
}

// wait is how long client must wait before its credential is checked again;
// 0 when it may be checked now.
func (f *failures) wait(client string) time.Duration {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	lim := f.m[client]
	f.mu.Unlock()
	if lim == nil {
		return 0
	}
	tokens := lim.TokensAt(f.now())
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(f.rps) * float64(time.Second))
}

// fail takes a token of client and reports whether it has none left.
func (f *failures) fail(client string) bool {
	if f == nil {
		return false
	}
	now := f.now()
	f.mu.Lock()
	lim := f.m[client]
	if lim == nil {
		if len(f.m) >= maxFailureBuckets {
			for k, l := range f.m { // full buckets remember nothing
				if l.TokensAt(now) >= float64(f.burst) {
					delete(f.m, k)
				}
			}
			if len(f.m) >= maxFailureBuckets {
				f.m = map[string]*rate.Limiter{}
			}
		}
		lim = rate.NewLimiter(f.rps, f.burst)
		f.m[client] = lim
	}
	f.mu.Unlock()
	lim.AllowN(now, 1)
	return lim.TokensAt(now) < 1
}

// clientOf is the address a call's failures count against, and its
// surface: the HTTP client of a call through the gateway, else the peer's
// IP address (without port: a caller reconnecting does not start afresh).
func (a *Authenticator) clientOf(ctx context.Context) (client, surface string) {
	if a.clients != nil {
		if addr, ok := a.clients.Client(ctx); ok {
			return addr, "http"
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return host, "grpc"
		}
		return p.Addr.String(), "grpc"
	}
	return "unknown", "grpc"
}

// throttled is the refusal of a call whose client failed authentication
// too often: RATE_LIMITED with the delay after which a credential is
// checked again, in the message, the metadata and a RetryInfo (RetryDelay).
// Branch methods answer Unavailable, which DTM retries, as the rate
// limiter's do.
func throttled(method, client string, wait time.Duration) *participant.Error {
	code := participant.ERATELIMIT
	if IsBranch(method) {
		code = participant.EUNAVAILABLE
	}
	retry := wait.Round(time.Millisecond)
	wait = max(retry, time.Millisecond)
	e := participant.Errorf(code, participant.ReasonRateLimited, "too many failed authentications from %s; retry after %s", client, wait)
	e.Metadata = map[string]string{"client": client, "limit": "auth_failures", "retry_delay": wait.String()}
	e.RetryDelay = retry
	return e
}
