package auth_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"

	"github.com/opencoupon/coupon/internal/auth"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// events counts what the authenticator reports, by surface.
type events struct {
	mu                sync.Mutex
	failed, throttled map[string]int
}

func (e *events) AuthFailed(s string)    { e.mu.Lock(); e.failed[s]++; e.mu.Unlock() }
func (e *events) AuthThrottled(s string) { e.mu.Lock(); e.throttled[s]++; e.mu.Unlock() }

// TestFailedAuthenticationLoggedWithoutToken: every failed authentication
// is logged at WARN with the client's address and never the token, and a
// client past its budget earns a try back at the configured rate.
func TestFailedAuthenticationLoggedWithoutToken(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	now := time.Unix(1_800_000_000, 0)
	ev := &events{failed: map[string]int{}, throttled: map[string]int{}}
	a, err := auth.New(auth.Config{Enabled: true, Callers: auth.DevCallers(), Now: func() time.Time { return now },
		FailureRPS: 0.5, FailureBurst: 2, Events: ev}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}})
	method := couponv1.CouponService_GetTemplate_FullMethodName
	const secret = "s3cret-guess-0123456789"
	for i := range 2 {
		if _, _, err := call(a, ctx, method, "authorization", "Bearer "+secret); codeOf(err) != codes.Unauthenticated {
			t.Fatalf("wrong token %d: %v, want Unauthenticated", i+1, err)
		}
	}
	if _, _, err := call(a, ctx, method, "authorization", auth.Bearer(auth.DevTokenApp)); codeOf(err) != codes.ResourceExhausted {
		t.Fatalf("right token past the budget: %v, want ResourceExhausted", err)
	}
	now = now.Add(2 * time.Second) // one try back at 0.5/s
	if _, _, err := call(a, ctx, method, "authorization", auth.Bearer(auth.DevTokenApp)); err != nil {
		t.Fatalf("right token after a try came back: %v", err)
	}
	out := buf.String()
	if strings.Count(out, `msg="authentication failed"`) != 2 || !strings.Contains(out, "client=192.0.2.7") || !strings.Contains(out, "level=WARN") {
		t.Errorf("log does not hold the two failures at WARN with the client's address:\n%s", out)
	}
	if strings.Contains(out, secret) || strings.Contains(out, auth.DevTokenApp) {
		t.Errorf("log holds a token:\n%s", out)
	}
	if ev.failed["grpc"] != 2 || ev.throttled["grpc"] != 1 {
		t.Errorf("events failed %v throttled %v, want grpc 2 and 1", ev.failed, ev.throttled)
	}
}

func codeOf(err error) codes.Code { c, _ := reason(err); return c }
