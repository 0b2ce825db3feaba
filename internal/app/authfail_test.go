package app_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// dialFrom connects to addr from a loopback address of its own (Linux
// routes all of 127/8 to lo), so the server sees a peer of its own.
func dialFrom(t *testing.T, addr, ip string) *grpc.ClientConn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// reasonOf is the ErrorInfo reason and RetryInfo delay of a refusal.
func reasonOf(err error) (string, time.Duration) {
	var reason string
	var delay time.Duration
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.RetryInfo:
			delay = d.GetRetryDelay().AsDuration()
		}
	}
	return reason, delay
}

// TestAuthFailuresCountedAndLimited: wrong tokens on gRPC are refused
// Unauthenticated and counted under surface grpc until the peer's failure
// budget is spent; then that peer is refused RATE_LIMITED with a retry
// delay before its credential is looked at — the right token too — while
// another peer, health checks and calls with a branch credential (which
// DTM sends for every transaction from one address) are not held up. The
// JSON API's failures count under surface http, per HTTP client.
func TestAuthFailuresCountedAndLimited(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Auth.FailureRPS, c.Auth.FailureBurst = 0.001, 3 // no try comes back during the test
		c.HTTP.Addr = "127.0.0.1:0"
	})
	web, err := srv.App.StartHTTP(context.Background(), srv.Addr)
	if err != nil {
		t.Fatalf("start http: %v", err)
	}
	t.Cleanup(func() { _ = web.Close() })
	ctx := t.Context()
	getAs := func(conn *grpc.ClientConn, token string) error {
		c := couponv1.NewCouponServiceClient(conn)
		_, err := c.GetTemplate(metadata.AppendToOutgoingContext(ctx, auth.Header, auth.Bearer(token)), &couponv1.GetTemplateRequest{TemplateId: 424242})
		return err
	}
	a := dialFrom(t, srv.Addr, "127.0.0.2")
	for i := range 3 {
		if err := getAs(a, "wrong-token"); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("wrong token %d: %v, want Unauthenticated", i+1, err)
		}
	}
	for _, token := range []string{"wrong-token", coupontest.TokenApp} {
		err := getAs(a, token)
		reason, delay := reasonOf(err)
		if status.Code(err) != codes.ResourceExhausted || reason != "RATE_LIMITED" || delay <= 0 {
			t.Fatalf("peer past its failures, token %q: %v (reason %q, retry %s), want ResourceExhausted RATE_LIMITED with a retry delay", token, err, reason, delay)
		}
	}
	// Health stays open to the limited peer.
	if _, err := healthpb.NewHealthClient(a).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check from the limited peer: %v", err)
	}
	// A branch credential is not held up by the peer's failures: a forged
	// one is refused by authentication (and counted), not by the limit.
	forged := metadata.AppendToOutgoingContext(ctx, branchcred.Header, "v1.forged.forged", auth.DTMGID, "gid-1")
	_, err = couponv1.NewCouponServiceClient(a).ConsumeCoupon(forged, &couponv1.CouponBranchRequest{UserId: 1, CouponCode: "X", Order: &couponv1.Order{OrderNo: "o-1"}})
	if reason, _ := reasonOf(err); status.Code(err) != codes.Unauthenticated || reason != "UNAUTHENTICATED" {
		t.Fatalf("branch credential from the limited peer: %v, want Unauthenticated (checked, not limited)", err)
	}
	// Another peer is served.
	b := dialFrom(t, srv.Addr, "127.0.0.3")
	if err := getAs(b, coupontest.TokenApp); status.Code(err) != codes.NotFound {
		t.Fatalf("another peer with the right token: %v, want NotFound (served)", err)
	}

	// The JSON API: wrong tokens from one HTTP client.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.4")}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 30 * time.Second}
	httpGet := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+web.Addr()+"/v1/templates/424242", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Details []struct {
				Reason string `json:"reason"`
			} `json:"details"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		for _, d := range body.Details {
			if d.Reason != "" {
				return resp.StatusCode, d.Reason
			}
		}
		return resp.StatusCode, ""
	}
	for i := range 3 {
		if code, reason := httpGet("wrong-token"); code != http.StatusUnauthorized {
			t.Fatalf("HTTP wrong token %d: %d %s, want 401", i+1, code, reason)
		}
	}
	if code, reason := httpGet(coupontest.TokenApp); code != http.StatusTooManyRequests || reason != "RATE_LIMITED" {
		t.Fatalf("HTTP client past its failures, right token: %d %s, want 429 RATE_LIMITED", code, reason)
	}

	s := samples(srv.Metrics(t))
	for _, c := range []struct {
		name, surface string
		want          float64
	}{
		{"coupon_auth_failures_total", "grpc", 4}, // three wrong tokens and the forged branch credential
		{"coupon_auth_failures_total", "http", 3},
		{"coupon_auth_throttled_total", "grpc", 2},
		{"coupon_auth_throttled_total", "http", 1},
	} {
		if got, ok := value(s, c.name, `surface="`+c.surface+`"`); !ok || got != c.want {
			t.Errorf("%s{surface=%q} = %v (exported %v), want %v", c.name, c.surface, got, ok, c.want)
		}
	}
}
