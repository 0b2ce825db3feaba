package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/rpc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// unary is a's interceptor as the server chains it: inside the error map,
// which turns its domain errors into statuses.
func unary(a *auth.Authenticator) grpc.UnaryServerInterceptor {
	errs := rpc.UnaryErrors(quiet)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return errs(ctx, req, info, func(ctx context.Context, req any) (any, error) { return a.Unary(ctx, req, info, h) })
	}
}

// stream is unary for streams.
func stream(a *auth.Authenticator) grpc.StreamServerInterceptor {
	errs := rpc.StreamErrors(quiet)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return errs(srv, ss, info, func(srv any, ss grpc.ServerStream) error { return a.Stream(srv, ss, info, h) })
	}
}

func mustNew(t *testing.T, cfg auth.Config) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(cfg, quiet)
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	return a
}

// call runs method through the interceptor with incoming metadata md and
// returns the caller the handler saw and the error.
func call(a *auth.Authenticator, ctx context.Context, method string, md ...string) (participant.Caller, bool, error) {
	if len(md) > 0 {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(md...))
	}
	var got participant.Caller
	var seen bool
	_, err := unary(a)(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, _ any) (any, error) {
		got, seen = participant.CallerFrom(ctx)
		return nil, nil
	})
	return got, seen, err
}

func reason(err error) (codes.Code, string) {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), ei.GetReason()
		}
	}
	return st.Code(), ""
}

func TestRolesAndMethods(t *testing.T) {
	a := mustNew(t, auth.Config{Enabled: true, Callers: auth.DevCallers()})
	bearer := func(tok string) []string { return []string{"authorization", "Bearer " + tok} }
	tests := []struct {
		name     string
		method   string
		md       []string
		code     codes.Code
		reason   string
		identity string
	}{
		{"admin without credential", couponv1.AdminService_CreateCampaign_FullMethodName, nil, codes.Unauthenticated, "UNAUTHENTICATED", ""},
		{"admin as app", couponv1.AdminService_CreateCampaign_FullMethodName, bearer(auth.DevTokenApp), codes.PermissionDenied, "PERMISSION_DENIED", ""},
		{"admin as shop", couponv1.AdminService_ListAuditLog_FullMethodName, bearer(auth.DevTokenShop), codes.PermissionDenied, "PERMISSION_DENIED", ""},
		{"admin as alice", couponv1.AdminService_ApproveTemplate_FullMethodName, bearer(auth.DevTokenAlice), codes.OK, "", "alice"},
		{"admin method added later", "/coupon.v1.AdminService/Future", bearer(auth.DevTokenBob), codes.OK, "", "bob"},
		{"lock as app", couponv1.CouponService_LockCoupon_FullMethodName, bearer(auth.DevTokenApp), codes.PermissionDenied, "PERMISSION_DENIED", ""},
		{"lock as shop", couponv1.CouponService_LockCoupon_FullMethodName, bearer(auth.DevTokenShop), codes.OK, "", "shop"},
		{"return as shop", couponv1.CouponService_ReturnCoupon_FullMethodName, bearer(auth.DevTokenShop), codes.OK, "", "shop"},
		{"claim as shop", couponv1.CouponService_ClaimCoupon_FullMethodName, bearer(auth.DevTokenShop), codes.PermissionDenied, "PERMISSION_DENIED", ""},
		{"read as shop", couponv1.CouponService_GetCoupon_FullMethodName, bearer(auth.DevTokenShop), codes.OK, "", "shop"},
		{"claim as app", couponv1.CouponService_ClaimCoupon_FullMethodName, bearer(auth.DevTokenApp), codes.OK, "", "app"},
		{"claim as admin", couponv1.CouponService_ClaimCoupon_FullMethodName, bearer(auth.DevTokenAlice), codes.PermissionDenied, "PERMISSION_DENIED", ""},
		{"unknown token", couponv1.CouponService_GetCoupon_FullMethodName, bearer("guess"), codes.Unauthenticated, "UNAUTHENTICATED", ""},
		{"not bearer", couponv1.CouponService_GetCoupon_FullMethodName, []string{"authorization", "Basic " + auth.DevTokenApp}, codes.Unauthenticated, "UNAUTHENTICATED", ""},
		{"two tokens", couponv1.CouponService_GetCoupon_FullMethodName, append(bearer(auth.DevTokenApp), bearer(auth.DevTokenShop)...), codes.Unauthenticated, "UNAUTHENTICATED", ""},
		{"lower-case scheme", couponv1.CouponService_GetCoupon_FullMethodName, []string{"authorization", "bearer " + auth.DevTokenApp}, codes.OK, "", "app"},
		{"x-caller-id is no credential", couponv1.CouponService_GetCoupon_FullMethodName, []string{"x-caller-id", "app"}, codes.Unauthenticated, "UNAUTHENTICATED", ""},
		{"health is open", "/grpc.health.v1.Health/Check", nil, codes.OK, "", ""},
		{"reflection is open", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", nil, codes.OK, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, seen, err := call(a, context.Background(), tt.method, tt.md...)
			code, reason := reason(err)
			if code != tt.code || reason != tt.reason {
				t.Fatalf("got %s %q (%v), want %s %q", code, reason, err, tt.code, tt.reason)
			}
			if err != nil {
				return
			}
			if tt.identity == "" {
				if seen {
					t.Fatalf("open method got a caller %+v", c)
				}
				return
			}
			if !seen || c.Identity != tt.identity || c.Method != tt.method {
				t.Fatalf("caller %+v (seen %v), want identity %s method %s", c, seen, tt.identity, tt.method)
			}
		})
	}
}

func TestDisabledPassesEverything(t *testing.T) {
	a := mustNew(t, auth.Config{Enabled: false, Callers: auth.DevCallers()})
	if _, seen, err := call(a, context.Background(), couponv1.AdminService_CreateCampaign_FullMethodName); err != nil || seen {
		t.Fatalf("auth off: err %v, caller seen %v; want served without a caller", err, seen)
	}
}

func TestConfigErrors(t *testing.T) {
	hash := auth.HashToken("t")
	tests := []struct {
		name    string
		callers []auth.Caller
	}{
		{"no identity", []auth.Caller{{Roles: []string{"app"}, TokenSHA256: hash}}},
		{"no roles", []auth.Caller{{Identity: "x", TokenSHA256: hash}}},
		{"unknown role", []auth.Caller{{Identity: "x", Roles: []string{"root"}, TokenSHA256: hash}}},
		{"no credential", []auth.Caller{{Identity: "x", Roles: []string{"app"}}}},
		{"token instead of hash", []auth.Caller{{Identity: "x", Roles: []string{"app"}, TokenSHA256: "local-app"}}},
		{"shared token", []auth.Caller{{Identity: "x", Roles: []string{"app"}, TokenSHA256: hash}, {Identity: "y", Roles: []string{"app"}, TokenSHA256: hash}}},
		{"shared subject", []auth.Caller{{Identity: "x", Roles: []string{"app"}, Subject: "CN=a"}, {Identity: "y", Roles: []string{"app"}, Subject: "CN=a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := auth.New(auth.Config{Enabled: true, Callers: tt.callers}, quiet); err == nil {
				t.Fatal("got no error")
			}
		})
	}
}

func TestClientCertificateSubject(t *testing.T) {
	a := mustNew(t, auth.Config{Enabled: true, Callers: []auth.Caller{
		{Identity: "shop", Roles: []string{auth.RoleOrder}, Subject: "CN=shop,O=Example"},
		{Identity: "app", Roles: []string{auth.RoleApp}, TokenSHA256: auth.HashToken("tok")},
	}})
	withCert := func(subject pkix.Name) context.Context {
		cert := &x509.Certificate{Subject: subject}
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
			VerifiedChains: [][]*x509.Certificate{{cert}},
		}}})
	}
	shop := pkix.Name{CommonName: "shop", Organization: []string{"Example"}}
	if c, _, err := call(a, withCert(shop), couponv1.CouponService_LockCoupon_FullMethodName); err != nil || c.Identity != "shop" || !slices.Equal(c.Roles, []string{"order"}) {
		t.Fatalf("known subject: caller %+v, err %v", c, err)
	}
	if _, _, err := call(a, withCert(pkix.Name{CommonName: "mallory"}), couponv1.CouponService_LockCoupon_FullMethodName); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown subject: %v, want Unauthenticated", err)
	}
	// A token decides over the certificate it comes with.
	if c, _, err := call(a, withCert(shop), couponv1.CouponService_ClaimCoupon_FullMethodName, "authorization", "Bearer tok"); err != nil || c.Identity != "app" {
		t.Fatalf("token with certificate: caller %+v, err %v", c, err)
	}
	if _, _, err := call(a, withCert(shop), couponv1.CouponService_LockCoupon_FullMethodName, "authorization", "Bearer wrong"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("bad token with good certificate: %v, want Unauthenticated", err)
	}
}

func TestTokensPickPerMethod(t *testing.T) {
	tok := auth.DevTokens()
	tests := []struct{ method, want string }{
		{couponv1.AdminService_ApproveTemplate_FullMethodName, auth.DevTokenAlice},
		{couponv1.CouponService_ClaimCoupon_FullMethodName, auth.DevTokenApp},
		{couponv1.CouponService_GetCoupon_FullMethodName, auth.DevTokenApp},
		{couponv1.CouponService_ConsumeCoupon_FullMethodName, auth.DevTokenShop},
		{couponv1.CouponService_UseCouponRevert_FullMethodName, auth.DevTokenShop},
	}
	for _, tt := range tests {
		if got := tok.For(tt.method); got != tt.want {
			t.Errorf("For(%s) = %s, want %s", tt.method, got, tt.want)
		}
	}
}

func TestEveryServiceMethodHasARole(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{couponv1.CouponService_ServiceDesc, couponv1.AdminService_ServiceDesc} {
		for _, m := range sd.Methods {
			full := "/" + sd.ServiceName + "/" + m.MethodName
			if !auth.Allowed([]string{auth.RoleAdmin, auth.RoleApp, auth.RoleOrder}, full) {
				t.Errorf("%s: no role may call it", full)
			}
		}
	}
}

// TestBranchCredential checks each condition a branch credential must meet,
// and the why each refusal names.
func TestBranchCredential(t *testing.T) {
	now := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	a := mustNew(t, auth.Config{Enabled: true, Callers: auth.DevCallers(), Now: func() time.Time { return now }})
	mine := branchcred.Order{CouponCode: "C1", OrderNo: "o-1"}
	sign := func(key branchcred.Key, caller, gid string, exp time.Time) string {
		v, err := branchcred.Sign(key, caller, gid, exp, mine)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	good := sign(auth.DevBranchKey, "shop", "g-1", now.Add(time.Hour))
	branchReq := func(code, orderNo string) *couponv1.CouponBranchRequest {
		return &couponv1.CouponBranchRequest{UserId: 1, CouponCode: code, Order: &couponv1.Order{OrderNo: orderNo}}
	}
	forged := auth.DevBranchKey
	forged.Secret = strings.Repeat("x", branchcred.MinSecret)
	tests := []struct {
		name   string
		method string
		req    any
		md     []string
		code   codes.Code
		why    string
	}{
		{"confirm", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, good, "dtm-gid", "g-1"}, codes.OK, ""},
		{"saga compensation", couponv1.CouponService_UseCouponRevert_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, good, "dtm-gid", "g-1"}, codes.OK, ""},
		{"return", couponv1.CouponService_ReturnCoupon_FullMethodName, &couponv1.ReturnCouponRequest{CouponCode: "C1", OrderNo: "o-1"}, []string{branchcred.Header, good, "dtm-gid", "g-1"}, codes.OK, ""},
		{"try", couponv1.CouponService_LockCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, good, "dtm-gid", "g-1"}, codes.PermissionDenied, "METHOD"},
		{"user-side call", couponv1.CouponService_GetCoupon_FullMethodName, &couponv1.GetCouponRequest{UserId: 1, CouponCode: "C1"}, []string{branchcred.Header, good, "dtm-gid", "g-1"}, codes.PermissionDenied, "METHOD"},
		{"admin call", couponv1.AdminService_ListCampaigns_FullMethodName, &couponv1.ListCampaignsRequest{}, []string{branchcred.Header, good, "dtm-gid", "g-1"}, codes.PermissionDenied, "METHOD"},
		{"another gid", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, good, "dtm-gid", "g-2"}, codes.Unauthenticated, "OTHER_GID"},
		{"no gid", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, good}, codes.Unauthenticated, "OTHER_GID"},
		{"two gids", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, good, "dtm-gid", "g-1", "dtm-gid", "g-2"}, codes.Unauthenticated, "OTHER_GID"},
		{"another coupon", couponv1.CouponService_UnlockCoupon_FullMethodName, branchReq("C2", "o-1"), []string{branchcred.Header, good, "dtm-gid", "g-1"}, codes.PermissionDenied, "OTHER_COUPON"},
		{"another order", couponv1.CouponService_ReturnCoupon_FullMethodName, &couponv1.ReturnCouponRequest{CouponCode: "C1", OrderNo: "o-2"}, []string{branchcred.Header, good, "dtm-gid", "g-1"}, codes.PermissionDenied, "OTHER_COUPON"},
		{"expired", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, sign(auth.DevBranchKey, "shop", "g-1", now), "dtm-gid", "g-1"}, codes.Unauthenticated, "EXPIRED"},
		{"forged signature", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, sign(forged, "shop", "g-1", now.Add(time.Hour)), "dtm-gid", "g-1"}, codes.Unauthenticated, "INVALID"},
		{"unknown key", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, sign(branchcred.Key{ID: "other", Secret: forged.Secret}, "shop", "g-1", now.Add(time.Hour)), "dtm-gid", "g-1"}, codes.Unauthenticated, "INVALID"},
		{"signed for another caller", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, sign(auth.DevBranchKey, "alice", "g-1", now.Add(time.Hour)), "dtm-gid", "g-1"}, codes.Unauthenticated, "INVALID"},
		{"tampered payload", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, tamper(good), "dtm-gid", "g-1"}, codes.Unauthenticated, "INVALID"},
		{"garbage", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, "Bearer local-shop", "dtm-gid", "g-1"}, codes.Unauthenticated, "INVALID"},
		{"two credentials", couponv1.CouponService_ConsumeCoupon_FullMethodName, branchReq("C1", "o-1"), []string{branchcred.Header, good, branchcred.Header, good, "dtm-gid", "g-1"}, codes.Unauthenticated, "MULTIPLE"},
		// The order service's own Try: its token decides, the branch
		// headers DTM appended are not looked at.
		{"try with the token too", couponv1.CouponService_LockCoupon_FullMethodName, branchReq("C1", "o-1"), []string{"authorization", "Bearer " + auth.DevTokenShop, branchcred.Header, good, "dtm-gid", "g-1"}, codes.OK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(tc.md...))
			var got participant.Caller
			_, err := unary(a)(ctx, tc.req, &grpc.UnaryServerInfo{FullMethod: tc.method}, func(ctx context.Context, _ any) (any, error) {
				got, _ = participant.CallerFrom(ctx)
				return nil, nil
			})
			if c := status.Code(err); c != tc.code {
				t.Fatalf("%s: got %s (%v), want %s", tc.name, c, err, tc.code)
			}
			if err == nil {
				if got.Identity != "shop" {
					t.Errorf("caller %q, want shop", got.Identity)
				}
				return
			}
			if why := errorMetadata(err)["why"]; why != tc.why {
				t.Errorf("why %q, want %q (%v)", why, tc.why, err)
			}
		})
	}

	// A stream carries no request to check: a branch credential is refused.
	ss := &fakeStream{ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs(branchcred.Header, good, "dtm-gid", "g-1"))}
	err := stream(a)(nil, ss, &grpc.StreamServerInfo{FullMethod: couponv1.CouponService_ConsumeCoupon_FullMethodName}, func(any, grpc.ServerStream) error { return nil })
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("stream with a branch credential: %v, want PermissionDenied", err)
	}
}

// tamper swaps the gid in the credential's payload, keeping its signature.
func tamper(v string) string {
	parts := strings.Split(v, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"g-1"`, `"g-9"`, 1)))
	return strings.Join(parts, ".")
}

func errorMetadata(err error) map[string]string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetMetadata()
		}
	}
	return nil
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *fakeStream) Context() context.Context { return s.ctx }

func TestBranchKeysConfig(t *testing.T) {
	shop := func(roles []string, keys ...branchcred.Key) auth.Config {
		return auth.Config{Enabled: true, Callers: []auth.Caller{{Identity: "shop", Roles: roles, TokenSHA256: auth.HashToken("t"), BranchKeys: keys}}}
	}
	long := strings.Repeat("k", branchcred.MinSecret)
	for name, cfg := range map[string]auth.Config{
		"short secret":       shop([]string{auth.RoleOrder}, branchcred.Key{ID: "k1", Secret: "short"}),
		"no id":              shop([]string{auth.RoleOrder}, branchcred.Key{Secret: long}),
		"duplicate id":       shop([]string{auth.RoleOrder}, branchcred.Key{ID: "k1", Secret: long}, branchcred.Key{ID: "k1", Secret: long + "x"}),
		"without order role": shop([]string{auth.RoleApp}, branchcred.Key{ID: "k1", Secret: long}),
	} {
		if _, err := auth.New(cfg, quiet); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := auth.New(shop([]string{auth.RoleOrder}, branchcred.Key{ID: "k2", Secret: long + "2"}, branchcred.Key{ID: "k1", Secret: long}), quiet); err != nil {
		t.Errorf("two keys (a rotation): %v", err)
	}
}

// statuses is a Transactions answering from a map.
type statuses map[string]string

func (s statuses) Status(_ context.Context, gid string) (string, bool, error) {
	st, ok := s[gid]
	return st, ok, nil
}

// TestBranchCompensationOnlyWhileAborting: a Saga compensation on a branch
// credential is served only while DTM is compensating that Saga.
func TestBranchCompensationOnlyWhileAborting(t *testing.T) {
	now := time.Now()
	txns := statuses{"g-aborting": "aborting", "g-succeed": "succeed", "g-submitted": "submitted"}
	a := mustNew(t, auth.Config{Enabled: true, Callers: auth.DevCallers(), Transactions: txns})
	req := &couponv1.CouponBranchRequest{UserId: 1, CouponCode: "C1", Order: &couponv1.Order{OrderNo: "o-1"}}
	for gid, want := range map[string]codes.Code{"g-aborting": codes.OK, "g-succeed": codes.PermissionDenied, "g-submitted": codes.PermissionDenied, "g-unknown": codes.PermissionDenied} {
		v, err := branchcred.Sign(auth.DevBranchKey, "shop", gid, now.Add(time.Hour), branchcred.Order{CouponCode: "C1", OrderNo: "o-1"})
		if err != nil {
			t.Fatal(err)
		}
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(branchcred.Header, v, "dtm-gid", gid))
		for method, w := range map[string]codes.Code{couponv1.CouponService_UseCouponRevert_FullMethodName: want, couponv1.CouponService_UseCoupon_FullMethodName: codes.OK} {
			_, err := unary(a)(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) { return nil, nil })
			if got := status.Code(err); got != w {
				t.Errorf("%s of %s: %s (%v), want %s", method, gid, got, err, w)
			}
		}
	}
}
