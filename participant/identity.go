package participant

import "context"

// Caller is who makes a call, as the transport authenticated it: a service
// identity with its roles, and the RPC method it called. The domain uses it
// to fill and check created_by / approved_by / updated_by and to write the
// audit log; with authentication off there is no Caller.
type Caller struct {
	Identity string
	Roles    []string
	// Method is the full RPC method, e.g. /coupon.v1.AdminService/ApproveTemplate.
	Method string
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller ctx carries, if any.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
