package gateway

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/opencoupon/coupon/internal/console"
)

// Metadata the gateway adds to each of its gRPC calls: the HTTP client's
// address and the key that proves the gateway sent it.
const (
	forwardKeyHeader    = "x-coupon-gateway-key"
	forwardClientHeader = "x-coupon-gateway-client"
)

// Forwarding tells the gRPC server which HTTP client a call through the
// gateway came from. Over the gateway's loopback connection every call has
// one peer address, so without it all HTTP clients would share whatever is
// kept per address (the rate limits, when auth is off). The address travels
// in metadata with a key made per process and known only to the gateway and
// the server it was made for, so a gRPC caller cannot claim an address.
type Forwarding struct{ key string }

// NewForwarding returns a Forwarding with a fresh key.
func NewForwarding() *Forwarding {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return &Forwarding{key: hex.EncodeToString(b)}
}

// Client returns the HTTP client's address the gateway forwarded with the
// incoming call of ctx; ok is false for a call that did not come through
// the gateway with this key.
func (f *Forwarding) Client(ctx context.Context) (addr string, ok bool) {
	if f == nil {
		return "", false
	}
	md, _ := metadata.FromIncomingContext(ctx)
	keys, clients := md.Get(forwardKeyHeader), md.Get(forwardClientHeader)
	if len(keys) != 1 || len(clients) != 1 || clients[0] == "" ||
		subtle.ConstantTimeCompare([]byte(keys[0]), []byte(f.key)) != 1 {
		return "", false
	}
	return clients[0], true
}

// unary adds the HTTP client of ctx (see withClient) to an outgoing call.
func (f *Forwarding) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if addr, ok := ctx.Value(clientKey{}).(string); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, forwardKeyHeader, f.key, forwardClientHeader, addr)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

type clientKey struct{}

// withClient puts the HTTP client's address in the request's context, for
// every gRPC call made while serving it: the connection's, or the one a
// trusted proxy forwarded (X-Forwarded-For counts from those only).
func withClient(h http.Handler, proxies []string) (http.Handler, error) {
	p, err := console.ParseProxies(proxies)
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), clientKey{}, p.ClientIP(r)))
		h.ServeHTTP(w, r)
	}), nil
}

// forwardHeader reports whether a metadata key is one the gateway itself
// sets: an HTTP client must not send it through.
func forwardHeader(key string) bool {
	return strings.HasPrefix(strings.ToLower(key), "x-coupon-gateway-")
}
