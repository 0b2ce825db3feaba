// Package auth authenticates the services that call the coupon service (a
// bearer token, a DTM branch credential or a client-certificate subject
// under mTLS), checks their roles against the method called, and hands the
// caller to the domain through participant.WithCaller.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/internal/dtmquery"
	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Header is the gRPC metadata key of the bearer token.
const Header = "authorization"

// Caller is one configured calling service (an entry of auth.callers).
type Caller struct {
	Identity string   `mapstructure:"identity" json:"identity"`
	Roles    []string `mapstructure:"roles" json:"roles"`
	// TokenSHA256 is the hex SHA-256 of its bearer token; the token itself
	// is never configured or stored.
	TokenSHA256 string `mapstructure:"token_sha256" json:"token_sha256"`
	// Subject is the subject of its client certificate under mTLS, as Go
	// renders it (RFC 2253, e.g. "CN=shop,O=Example").
	Subject string `mapstructure:"subject" json:"subject"`
	// BranchKeys verify the branch credentials this caller signs for the
	// calls DTM makes on its transactions (package branchcred). Only a
	// caller with the order role has them; any of them verifies, so a key
	// is rotated by adding the new one first.
	BranchKeys []branchcred.Key `mapstructure:"branch_keys" json:"branch_keys,omitempty"`
}

// Config is the authentication configuration.
type Config struct {
	// Enabled turns authentication and authorization on. Off, every call is
	// served and the domain sees no caller.
	Enabled bool
	Callers []Caller
	// Now is the clock branch credentials expire by; time.Now if nil.
	Now func() time.Time
	// Coordinator is DTM's HTTP address (dtm.http_addr). With it, a Saga
	// compensation on a branch credential is served only while DTM is
	// compensating that Saga (status aborting): a copy of a succeeded
	// Saga's credential cannot give its coupon back. Empty: not checked.
	Coordinator string
	// Transactions answers for Coordinator when set (tests).
	Transactions Transactions
	// FailureRPS and FailureBurst limit failed authentications per client
	// address (the peer's, or the HTTP client's for a call through the
	// gateway): after FailureBurst failures its calls are refused
	// RATE_LIMITED before their credential is checked, and it earns one
	// more try every 1/FailureRPS seconds. Calls carrying a branch
	// credential are neither charged nor refused: it is signed, not
	// guessable, and DTM sends every transaction's calls from one address. Zero
	// takes the defaults (1/s, burst 10); a negative FailureRPS is no limit.
	FailureRPS   float64
	FailureBurst int
	// Clients names the HTTP client of a call through the gateway; nil:
	// every call is its peer's.
	Clients Clients
	// Events counts failed and refused authentications; nil counts nothing.
	Events Events
}

// Transactions tells a DTM global transaction's status (dtmquery.Client).
type Transactions interface {
	Status(ctx context.Context, gid string) (status string, known bool, err error)
}

// Authenticator knows the configured callers.
type Authenticator struct {
	known     sync.Map // token → *Caller, for tokens already matched
	enabled   bool
	byToken   map[string]*Caller // key: hex SHA-256
	bySubject map[string]*Caller
	byKey     map[string]branchKey // key id → its caller and secret
	now       func() time.Time
	txns      Transactions // nil: compensations are not checked
	failures  *failures    // nil: failed authentications are not limited
	clients   Clients
	events    Events
	log       *slog.Logger
}

type branchKey struct {
	caller *Caller
	secret string
}

// New checks the configuration and returns its authenticator.
func New(cfg Config, log *slog.Logger) (*Authenticator, error) {
	a := &Authenticator{enabled: cfg.Enabled, byToken: map[string]*Caller{}, bySubject: map[string]*Caller{}, byKey: map[string]branchKey{}, now: cfg.Now, log: log}
	if a.now == nil {
		a.now = time.Now
	}
	a.txns = cfg.Transactions
	a.failures = newFailures(cfg.FailureRPS, cfg.FailureBurst, a.now)
	a.clients, a.events = cfg.Clients, cfg.Events
	if a.txns == nil && cfg.Coordinator != "" {
		a.txns = dtmquery.Client{Addr: cfg.Coordinator}
	}
	for i := range cfg.Callers {
		c := cfg.Callers[i]
		if c.Identity == "" {
			return nil, fmt.Errorf("auth caller %d: identity is required", i)
		}
		if len(c.Roles) == 0 {
			return nil, fmt.Errorf("auth caller %s: no roles", c.Identity)
		}
		for _, r := range c.Roles {
			if _, ok := RoleMethods[r]; !ok {
				return nil, fmt.Errorf("auth caller %s: unknown role %q", c.Identity, r)
			}
		}
		if c.TokenSHA256 == "" && c.Subject == "" {
			return nil, fmt.Errorf("auth caller %s: needs token_sha256 or subject", c.Identity)
		}
		if h := strings.ToLower(c.TokenSHA256); h != "" {
			if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("auth caller %s: token_sha256 must be 64 hex digits (the SHA-256 of the token, not the token)", c.Identity)
			}
			if _, dup := a.byToken[h]; dup {
				return nil, fmt.Errorf("auth caller %s: token shared with another caller", c.Identity)
			}
			a.byToken[h] = &c
		}
		if c.Subject != "" {
			if _, dup := a.bySubject[c.Subject]; dup {
				return nil, fmt.Errorf("auth caller %s: subject %q shared with another caller", c.Identity, c.Subject)
			}
			a.bySubject[c.Subject] = &c
		}
		if len(c.BranchKeys) > 0 && !slices.Contains(c.Roles, RoleOrder) {
			return nil, fmt.Errorf("auth caller %s: branch_keys without the %s role", c.Identity, RoleOrder)
		}
		for _, k := range c.BranchKeys {
			if err := k.Check(); err != nil {
				return nil, fmt.Errorf("auth caller %s: %w", c.Identity, err)
			}
			if _, dup := a.byKey[k.ID]; dup {
				return nil, fmt.Errorf("auth caller %s: branch key id %q used twice", c.Identity, k.ID)
			}
			a.byKey[k.ID] = branchKey{caller: &c, secret: k.Secret}
		}
	}
	return a, nil
}

// HashToken returns the hex SHA-256 of token, as configured in token_sha256.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Bearer is the authorization metadata value carrying token.
func Bearer(token string) string { return "Bearer " + token }

// Authenticate returns the caller of ctx. A bearer token takes precedence
// over a client certificate; an unknown token is refused even when a known
// certificate comes with it.
func (a *Authenticator) Authenticate(ctx context.Context) (*Caller, error) {
	if v := metadata.ValueFromIncomingContext(ctx, Header); len(v) > 0 {
		if len(v) > 1 {
			return nil, refuse(participant.EUNAUTHENTICATED, "more than one authorization header")
		}
		scheme, token, ok := strings.Cut(v[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
			return nil, refuse(participant.EUNAUTHENTICATED, "authorization must be \"Bearer TOKEN\"")
		}
		token = strings.TrimSpace(token)
		if c, ok := a.known.Load(token); ok {
			return c.(*Caller), nil
		}
		if c := a.byHash(HashToken(token)); c != nil {
			// Only configured tokens are remembered, so the cache is as
			// small as auth.callers; it saves a SHA-256 per call.
			a.known.Store(token, c)
			return c, nil
		}
		return nil, refuse(participant.EUNAUTHENTICATED, "unknown bearer token")
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			subject := ti.State.VerifiedChains[0][0].Subject.String()
			if c := a.bySubject[subject]; c != nil {
				return c, nil
			}
			return nil, refuse(participant.EUNAUTHENTICATED, "client certificate subject %q is not a configured caller", subject)
		}
	}
	return nil, refuse(participant.EUNAUTHENTICATED, "no credential: send \"authorization: Bearer TOKEN\" or a client certificate")
}

// byHash looks a token hash up. The map lookup is keyed by a SHA-256, which
// leaks nothing useful through timing; the final compare is constant-time
// anyway.
func (a *Authenticator) byHash(h string) *Caller {
	c := a.byToken[h]
	if c == nil || subtle.ConstantTimeCompare([]byte(strings.ToLower(c.TokenSHA256)), []byte(h)) != 1 {
		return nil
	}
	return c
}

// Authorize checks that c may call method.
func Authorize(c *Caller, method string) error {
	if Allowed(c.Roles, method) {
		return nil
	}
	e := refuse(participant.EPERMISSION, "%s (roles %s) may not call %s", c.Identity, strings.Join(c.Roles, ","), method)
	e.Metadata = map[string]string{"identity": c.Identity, "method": method}
	return e
}

func refuse(code participant.Code, format string, args ...any) *participant.Error {
	reason := participant.ReasonUnauthenticated
	if code == participant.EPERMISSION {
		reason = participant.ReasonPermissionDenied
	}
	return participant.Errorf(code, reason, format, args...)
}

// check authenticates and authorizes a call to method with request req (nil
// for a stream) and returns ctx carrying the caller, or a domain error that
// the server's error map (rpc.UnaryErrors, outside this interceptor) turns
// into the call's status. A bearer token takes
// precedence over a branch credential: the order service's own Try carries
// both, its token and the branch headers DTM appends.
func (a *Authenticator) check(ctx context.Context, method string, req any) (context.Context, error) {
	if !a.enabled || Open(method) {
		return ctx, nil
	}
	var c *Caller
	var err error
	md, _ := metadata.FromIncomingContext(ctx)
	branchCall := len(md.Get(Header)) == 0 && len(md.Get(branchcred.Header)) > 0
	client, surface := a.clientOf(ctx)
	if !branchCall {
		// Before anything else looks at the call: a client guessing
		// tokens costs no more than this.
		if wait := a.failures.wait(client); wait > 0 {
			if a.events != nil {
				a.events.AuthThrottled(surface)
			}
			return ctx, throttled(method, client, wait)
		}
	}
	if branchCall {
		c, err = a.branch(ctx, md, method, req)
	} else {
		c, err = a.Authenticate(ctx)
		if err == nil {
			err = Authorize(c, method)
		}
	}
	if err != nil {
		if participant.ErrorCode(err) == participant.EUNAUTHENTICATED {
			a.failed(ctx, method, client, surface, branchCall, err)
		} else {
			a.log.DebugContext(ctx, "call refused", "method", method, "err", err)
		}
		return ctx, err
	}
	// The roles are shared, read only: a caller's configuration never changes.
	return participant.WithCaller(ctx, participant.Caller{Identity: c.Identity, Roles: c.Roles, Method: method}), nil
}

// failed logs and counts a failed authentication, and charges it to the
// client unless it came with a branch credential. The log says why, never
// the credential.
func (a *Authenticator) failed(ctx context.Context, method, client, surface string, branchCall bool, err error) {
	if a.events != nil {
		a.events.AuthFailed(surface)
	}
	a.log.WarnContext(ctx, "authentication failed", "surface", surface, "client", client, "method", method, "err", err)
	if !branchCall && a.failures.fail(client) {
		a.log.WarnContext(ctx, "authentication failures limited: calls from this client are refused until it earns a try",
			"surface", surface, "client", client, "burst", a.failures.burst, "per_second", float64(a.failures.rps))
	}
}

// DTMGID is the metadata key under which DTM sends a branch call's gid.
const DTMGID = "dtm-gid"

// branch authenticates and authorizes a call made with a branch credential:
// signed by a configured key of its caller and not expired (else
// Unauthenticated), for the gid in the call's dtm-gid metadata (else
// Unauthenticated: it is another transaction's credential), to a method DTM
// calls that the caller's roles allow, for a coupon and order the credential
// names (else PermissionDenied).
func (a *Authenticator) branch(ctx context.Context, md metadata.MD, method string, req any) (*Caller, error) {
	v := md.Get(branchcred.Header)
	if len(v) > 1 {
		return nil, branchRefusal(participant.EUNAUTHENTICATED, "MULTIPLE", "more than one branch credential")
	}
	claims, err := branchcred.Verify(v[0], func(id string) (string, bool) {
		k, ok := a.byKey[id]
		return k.secret, ok
	}, a.now())
	if err != nil {
		why := "INVALID"
		if errors.Is(err, branchcred.ErrExpired) {
			why = "EXPIRED"
		}
		return nil, branchRefusal(participant.EUNAUTHENTICATED, why, "%v", err)
	}
	c := a.byKey[claims.KeyID].caller
	if claims.Caller != c.Identity {
		return nil, branchRefusal(participant.EUNAUTHENTICATED, "INVALID", "branch credential of %s signed with a key of %s", claims.Caller, c.Identity)
	}
	if gid := md.Get(DTMGID); len(gid) != 1 || gid[0] != claims.GID {
		return nil, branchRefusal(participant.EUNAUTHENTICATED, "OTHER_GID", "branch credential of transaction %s used on a call of %q", claims.GID, strings.Join(gid, ","))
	}
	if !CoordinatorCall(method) || !Allowed(c.Roles, method) {
		return nil, branchRefusal(participant.EPERMISSION, "METHOD", "a branch credential of %s may not call %s", c.Identity, method)
	}
	code, orderNo, ok := couponOf(req)
	if !ok || !claims.Covers(code, orderNo) {
		return nil, branchRefusal(participant.EPERMISSION, "OTHER_COUPON", "the branch credential of transaction %s does not name coupon %q for order %q", claims.GID, code, orderNo)
	}
	if method == couponv1.CouponService_UseCouponRevert_FullMethodName && a.txns != nil {
		// The barrier lets a compensation through once after its action
		// succeeded; DTM sends one only while the Saga is aborting.
		status, known, err := a.txns.Status(ctx, claims.GID)
		if err != nil {
			return nil, participant.Unavailable("ask the coordinator about "+claims.GID, err)
		}
		if !known || status != dtmquery.Aborting {
			return nil, branchRefusal(participant.EPERMISSION, "NOT_ABORTING", "transaction %s is %q, not aborting: DTM sends no compensation", claims.GID, status)
		}
	}
	return c, nil
}

// couponOf is the coupon code and order number a branch request names.
func couponOf(req any) (code, orderNo string, ok bool) {
	switch r := req.(type) {
	case interface {
		GetCouponCode() string
		GetOrder() *couponv1.Order
	}:
		return r.GetCouponCode(), r.GetOrder().GetOrderNo(), true
	case interface {
		GetCouponCode() string
		GetOrderNo() string
	}:
		return r.GetCouponCode(), r.GetOrderNo(), true
	}
	return "", "", false
}

// branchRefusal is a refusal of a branch credential; its ErrorInfo
// metadata says credential=branch and why (MULTIPLE, INVALID, EXPIRED,
// OTHER_GID, METHOD, OTHER_COUPON, NOT_ABORTING).
func branchRefusal(code participant.Code, why, format string, args ...any) *participant.Error {
	e := refuse(code, format, args...)
	e.Metadata = map[string]string{"credential": "branch", "why": why}
	return e
}

// Unary is the unary server interceptor: unauthenticated calls get
// Unauthenticated, calls outside the caller's roles PermissionDenied, both
// with an ErrorInfo reason; health and reflection stay open. It returns
// domain errors: the server chains it inside rpc.UnaryErrors.
func (a *Authenticator) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.check(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream server interceptor, with the same rules as Unary,
// chained inside rpc.StreamErrors.
func (a *Authenticator) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.check(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	return h(srv, &stream{ServerStream: ss, ctx: ctx})
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

// Identify names the caller a bearer token belongs to (the console's
// sign-in); what the caller may do is still decided call by call.
func (a *Authenticator) Identify(_ context.Context, token string) (string, error) {
	if c := a.byHash(HashToken(strings.TrimSpace(token))); c != nil {
		return c.Identity, nil
	}
	return "", refuse(participant.EUNAUTHENTICATED, "unknown bearer token")
}
