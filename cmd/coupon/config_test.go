package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/console"
)

// TestLocalConfig: the local stack's file defines exactly the four
// development callers, auth on, and no rate limit.
func TestLocalConfig(t *testing.T) {
	cfg, _, err := loadConfig("../../deploy/local/coupon.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Auth.Enabled {
		t.Error("auth.enabled is off in deploy/local/coupon.yaml")
	}
	if diff := cmp.Diff(auth.DevCallers(), cfg.Auth.Callers); diff != "" {
		t.Errorf("callers of deploy/local/coupon.yaml (-want +got):\n%s", diff)
	}
	if cfg.RateLimit.PerCaller != 0 || cfg.RateLimit.Branch >= 0 || len(cfg.RateLimit.Limits) != 0 {
		t.Errorf("deploy/local/coupon.yaml sets rate limits %+v; make bench must not meet one", cfg.RateLimit)
	}
	if _, err := auth.New(cfg.Auth, nil); err != nil {
		t.Errorf("callers do not load: %v", err)
	}
}

func TestDefaultsAndEnvironment(t *testing.T) {
	cfg, _, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Auth.Enabled || len(cfg.Auth.Callers) != 0 {
		t.Errorf("default auth %+v, want enabled with no callers", cfg.Auth)
	}
	if cfg.Deadlines.User != 500*time.Millisecond || cfg.Deadlines.Branch != app.DefaultBranchDeadline {
		t.Errorf("default deadlines %+v", cfg.Deadlines)
	}
	if cfg.RateLimit.Branch != app.DefaultBranchRPS || cfg.RateLimit.BranchBurst != app.DefaultBranchBurst {
		t.Errorf("default branch limit %v/%d, want %v/%d", cfg.RateLimit.Branch, cfg.RateLimit.BranchBurst, app.DefaultBranchRPS, app.DefaultBranchBurst)
	}
	if cfg.Pprof.Addr != "" {
		t.Errorf("pprof.addr defaults to %q, want off", cfg.Pprof.Addr)
	}
	wantConns := app.Connections{GRPC: app.DefaultGRPCMaxConns, HTTP: app.DefaultHTTPMaxConns, Ops: app.DefaultOpsMaxConns}
	if cfg.Conns != wantConns {
		t.Errorf("default connection caps %+v, want %+v", cfg.Conns, wantConns)
	}
	if cfg.Ops.IdleTimeout != app.DefaultOpsIdleTimeout || cfg.Keepalive.MaxIdle != app.DefaultGRPCMaxIdle || cfg.Keepalive.HandshakeTimeout != app.DefaultHandshakeTimeout {
		t.Errorf("default idle timeouts: ops %+v, grpc %+v", cfg.Ops, cfg.Keepalive)
	}
	t.Setenv("COUPON_GRPC_MAX_CONNECTIONS", "0")
	t.Setenv("COUPON_PPROF_ADDR", "127.0.0.1:6060")
	t.Setenv("COUPON_PPROF_HOSTS", "localhost,ops.internal")
	t.Setenv("COUPON_AUTH_ENABLED", "false")
	t.Setenv("COUPON_AUTH_CALLERS", `[{"identity":"svc","roles":["app"],"token_sha256":"`+auth.HashToken("t")+`"}]`)
	t.Setenv("COUPON_RATELIMIT_LIMITS", `[{"role":"app","methods":["CouponService/ClaimCoupon"],"rps":50,"burst":100}]`)
	t.Setenv("COUPON_DEADLINE_USER", "0s")
	t.Setenv("COUPON_GRPC_TLS_CERT_FILE", "/etc/coupon/tls.crt")
	cfg, _, err = loadConfig("../../deploy/local/coupon.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []auth.Caller{{Identity: "svc", Roles: []string{"app"}, TokenSHA256: auth.HashToken("t")}}
	if cfg.Auth.Enabled || !cmp.Equal(cfg.Auth.Callers, want) {
		t.Errorf("auth from the environment: %+v, want off with %+v", cfg.Auth, want)
	}
	wantLimits := []app.Limit{{Role: "app", Methods: []string{"CouponService/ClaimCoupon"}, RPS: 50, Burst: 100}}
	if !cmp.Equal(cfg.RateLimit.Limits, wantLimits) {
		t.Errorf("limits from the environment: %+v, want %+v", cfg.RateLimit.Limits, wantLimits)
	}
	if cfg.Deadlines.User >= 0 {
		t.Errorf("deadline.user 0s gave %s, want no bound (negative)", cfg.Deadlines.User)
	}
	if cfg.Conns.GRPC >= 0 {
		t.Errorf("grpc.max_connections 0 gave %d, want no cap (negative)", cfg.Conns.GRPC)
	}
	if cfg.Pprof.Addr != "127.0.0.1:6060" || !cmp.Equal(cfg.Pprof.Hosts, []string{"localhost", "ops.internal"}) {
		t.Errorf("pprof from the environment: %+v", cfg.Pprof)
	}
	if cfg.TLS.CertFile != "/etc/coupon/tls.crt" {
		t.Errorf("TLS cert file %q", cfg.TLS.CertFile)
	}
}

// TestAuthEdgeKeys: the sign-in throttle and the failed-authentication
// limit are on by default; 0 turns them off; trusted proxies come as a
// comma-separated list from the environment.
func TestAuthEdgeKeys(t *testing.T) {
	cfg, _, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	con := cfg.HTTP.Console
	if con.SigninFailures != console.DefaultSigninFailures || con.SigninWindow != console.DefaultSigninWindow || con.SecureCookies || len(con.TrustedProxies) != 0 {
		t.Errorf("default console %+v, want throttle %d in %s, no forced Secure, no proxies", con, console.DefaultSigninFailures, console.DefaultSigninWindow)
	}
	if cfg.Auth.FailureRPS != auth.DefaultFailureRPS || cfg.Auth.FailureBurst != auth.DefaultFailureBurst {
		t.Errorf("default failure limit %v/%d, want %v/%d", cfg.Auth.FailureRPS, cfg.Auth.FailureBurst, auth.DefaultFailureRPS, auth.DefaultFailureBurst)
	}
	t.Setenv("COUPON_HTTP_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
	t.Setenv("COUPON_CONSOLE_SECURE_COOKIES", "true")
	t.Setenv("COUPON_CONSOLE_SIGNIN_FAILURES", "0")
	t.Setenv("COUPON_AUTH_FAILURE_RPS", "0")
	if cfg, _, err = loadConfig(""); err != nil {
		t.Fatal(err)
	}
	con = cfg.HTTP.Console
	if !cmp.Equal(con.TrustedProxies, []string{"10.0.0.0/8", "192.0.2.1"}) || !con.SecureCookies || con.SigninFailures >= 0 {
		t.Errorf("console from the environment %+v, want the two proxies, forced Secure, throttle off (negative)", con)
	}
	if cfg.Auth.FailureRPS >= 0 {
		t.Errorf("auth.failure_rps 0 gave %v, want no limit (negative)", cfg.Auth.FailureRPS)
	}
}
