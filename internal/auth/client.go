package auth

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/opencoupon/coupon/client/branchcred"
)

// Development tokens of the local stack (deploy/local/coupon.yaml). They are
// public: never configure their hashes outside a development machine.
const (
	DevTokenAlice = "local-admin-alice" // identity alice, role admin
	DevTokenBob   = "local-admin-bob"   // identity bob, role admin
	DevTokenApp   = "local-app"         // identity app, role app
	DevTokenShop  = "local-shop"        // identity shop, role order
)

// DevBranchKey is the shop's development branch key (deploy/local/coupon.yaml
// and shop.yaml). Public like the tokens: development only.
var DevBranchKey = branchcred.Key{ID: "local-shop-1", Secret: "local-shop-branch-key-public-development-only"}

// DevCallers are the development callers of the local stack.
func DevCallers() []Caller {
	return []Caller{
		{Identity: "alice", Roles: []string{RoleAdmin}, TokenSHA256: HashToken(DevTokenAlice)},
		{Identity: "bob", Roles: []string{RoleAdmin}, TokenSHA256: HashToken(DevTokenBob)},
		{Identity: "app", Roles: []string{RoleApp}, TokenSHA256: HashToken(DevTokenApp)},
		{Identity: "shop", Roles: []string{RoleOrder}, TokenSHA256: HashToken(DevTokenShop), BranchKeys: []branchcred.Key{DevBranchKey}},
	}
}

// Tokens are a client's bearer tokens per kind of method.
type Tokens struct {
	Admin string // AdminService
	App   string // user-side CouponService methods
	Shop  string // branch methods
}

// DevTokens are the development tokens: alice for AdminService, the app
// for user-side calls, the shop for branch calls.
func DevTokens() Tokens { return Tokens{Admin: DevTokenAlice, App: DevTokenApp, Shop: DevTokenShop} }

// For is the token that may call method.
func (t Tokens) For(method string) string {
	switch {
	case matchAny(RoleMethods[RoleAdmin], method):
		return t.Admin
	case IsBranch(method):
		return t.Shop
	default:
		return t.App
	}
}

type noTokenKey struct{}

// AsToken makes the calls under ctx carry token instead of the default one.
func AsToken(ctx context.Context, token string) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(Header, Bearer(token))
	return metadata.NewOutgoingContext(ctx, md)
}

// WithoutToken makes the calls under ctx carry no credential (unless
// AsToken or the caller's own metadata adds one).
func WithoutToken(ctx context.Context) context.Context {
	return context.WithValue(ctx, noTokenKey{}, true)
}

// Interceptor attaches t.For(method) to each call whose context carries no
// authorization metadata yet and was not marked WithoutToken.
func (t Tokens) Interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		md, _ := metadata.FromOutgoingContext(ctx)
		if len(md.Get(Header)) == 0 && ctx.Value(noTokenKey{}) == nil {
			if tok := t.For(method); tok != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, Header, Bearer(tok))
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
