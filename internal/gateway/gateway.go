// Package gateway serves the coupon service's HTTP listener: the JSON API
// (grpc-gateway over the service's own gRPC listener, so every HTTP call
// passes the same authentication, permissions, limits, deadlines and error
// mapping as a gRPC call), the OpenAPI document, and the operator console.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/participant/rpc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
	"github.com/opencoupon/coupon/proto/openapi"
)

// Config is the HTTP listener's configuration.
type Config struct {
	// Addr is where the listener binds (config http.addr); empty turns it off.
	Addr    string
	Console console.Config
	// TLS, when given a certificate and key, serves the listener over TLS
	// (config http.tls.*).
	TLS TLSConfig
}

// TLSConfig turns TLS on for the HTTP listener, as grpc.tls does for gRPC.
type TLSConfig struct {
	CertFile string
	KeyFile  string
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// config loads the key pair; a missing half or an unreadable pair stops
// the start rather than serving plain text in its place.
func (t TLSConfig) config() (*tls.Config, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("http tls: both cert_file and key_file are required")
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("http tls: load key pair: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// maxBody bounds a JSON request body; gRPC's own limit is 4 MiB.
const maxBody = 1 << 20

// NewAPI returns the JSON API handler (paths under /v1/) calling the
// service through conn.
func NewAPI(ctx context.Context, conn *grpc.ClientConn, log *slog.Logger) (http.Handler, error) {
	mux := runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
			Marshaler: &runtime.JSONPb{
				MarshalOptions: protojson.MarshalOptions{EmitUnpopulated: true},
				// A misspelt field is refused rather than silently dropped:
				// a payment-adjacent API should not guess.
				UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
			},
		}),
	)
	if err := couponv1.RegisterCouponServiceHandler(ctx, mux, conn); err != nil {
		return nil, fmt.Errorf("register coupon service handler: %w", err)
	}
	if err := couponv1.RegisterAdminServiceHandler(ctx, mux, conn); err != nil {
		return nil, fmt.Errorf("register admin service handler: %w", err)
	}
	routes, err := routesOf(couponv1.File_coupon_v1_coupon_proto, couponv1.File_coupon_v1_admin_proto)
	if err != nil {
		return nil, err
	}
	return strict(routes, mux, log, mux), nil
}

// incomingHeader picks the HTTP headers that become gRPC metadata. The
// gateway itself passes Authorization through as "authorization"; this
// adds DTM's barrier headers (so a branch call over HTTP reaches the
// barrier as it would over gRPC) and the caller and request ids, and keeps
// the default prefixed copies of standard headers, except a second copy of
// the credential.
func incomingHeader(key string) (string, bool) {
	k := textproto.CanonicalMIMEHeaderKey(key)
	switch {
	case k == "Authorization":
		return "", false
	case strings.HasPrefix(k, "Dtm-"), k == "X-Caller-Id", k == "X-Request-Id":
		return strings.ToLower(k), true
	}
	if md, ok := runtime.DefaultHeaderMatcher(k); ok && !forwardHeader(md) {
		return md, true
	}
	return "", false
}

func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	var herr *runtime.HTTPStatusError
	if errors.As(err, &herr) {
		err = herr.Err
	}
	// Statuses the gateway's runtime makes (a body that is not JSON, an
	// unknown path, the gRPC listener unreachable) get an ErrorInfo reason
	// too, as the service's own errors carry.
	st := rpc.WithReason(status.Convert(err))
	err = st.Err()
	if herr != nil {
		err = &runtime.HTTPStatusError{HTTPStatus: herr.HTTPStatus, Err: err}
	}
	if st.Code() == codes.Unauthenticated {
		w = bearerChallenge{w}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// bearerChallenge answers 401 with a Bearer challenge; the default handler
// would put the status message in WWW-Authenticate.
type bearerChallenge struct{ http.ResponseWriter }

func (b bearerChallenge) WriteHeader(code int) {
	b.Header().Set("WWW-Authenticate", `Bearer realm="coupon"`)
	b.ResponseWriter.WriteHeader(code)
}

// Server is the running HTTP listener.
type Server struct {
	http *http.Server
	lis  net.Listener
	conn *grpc.ClientConn
	log  *slog.Logger
	done chan struct{}
}

// Deps are what the listener needs besides its configuration.
type Deps struct {
	// GRPCTarget is the service's own gRPC listener. With no DialOptions
	// the gateway dials it in plain text (it is on loopback).
	GRPCTarget  string
	DialOptions []grpc.DialOption
	// Console carries the console's optional ports (identities, reconcile
	// runs); its gRPC clients are filled in here.
	Console console.Deps
	// Forwarding, when set, sends each HTTP client's address with the
	// calls made for it, for the server that holds the same Forwarding.
	Forwarding *Forwarding
	Log        *slog.Logger
	// Listener, when set, is served instead of listening on Config.Addr
	// (the service passes its connection-capped listener); Close closes it.
	Listener net.Listener
}

// Start listens on cfg.Addr and serves the API under /v1/, the OpenAPI
// document at /openapi.json and the console under /console/ until ctx is
// done or Close is called.
func Start(ctx context.Context, cfg Config, d Deps) (*Server, error) {
	var tlsConfig *tls.Config
	if cfg.TLS.Enabled() {
		var err error
		if tlsConfig, err = cfg.TLS.config(); err != nil {
			return nil, err
		}
	}
	opts := slices.Clone(d.DialOptions)
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	if d.Forwarding != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(d.Forwarding.unary))
	}
	conn, err := grpc.NewClient(d.GRPCTarget, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial grpc %s: %w", d.GRPCTarget, err)
	}
	h, err := handler(ctx, cfg, conn, d)
	if err == nil {
		h, err = withClient(h, cfg.Console.TrustedProxies)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	lis := d.Listener
	if lis == nil {
		if lis, err = net.Listen("tcp", cfg.Addr); err != nil {
			conn.Close()
			return nil, fmt.Errorf("listen http %s: %w", cfg.Addr, err)
		}
	}
	s := &Server{
		http: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			TLSConfig:         tlsConfig,
		},
		lis: lis, conn: conn, log: d.Log, done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		serve := s.http.Serve
		if tlsConfig != nil {
			serve = func(l net.Listener) error { return s.http.ServeTLS(l, "", "") }
		}
		if err := serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.Log.Error("http listener stopped", "addr", lis.Addr().String(), "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			s.shutdown()
		case <-s.done:
		}
	}()
	d.Log.Info("http api and console serving", "http", lis.Addr().String(), "tls", tlsConfig != nil)
	return s, nil
}

func handler(ctx context.Context, cfg Config, conn *grpc.ClientConn, d Deps) (http.Handler, error) {
	api, err := NewAPI(ctx, conn, d.Log)
	if err != nil {
		return nil, err
	}
	cd := d.Console
	cd.Admin, cd.Coupons, cd.Log = couponv1.NewAdminServiceClient(conn), couponv1.NewCouponServiceClient(conn), d.Log
	con, err := console.New(cfg.Console, cd)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	mux.Handle("/console/", con)
	mux.Handle("/console", http.RedirectHandler("/console/", http.StatusSeeOther))
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.JSON)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	return mux, nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the listener, letting requests in flight finish for a few
// seconds, and closes the gRPC connection.
func (s *Server) Close() error {
	s.shutdown()
	<-s.done
	return s.conn.Close()
}

func (s *Server) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("http listener shutdown", "err", err)
	}
}
