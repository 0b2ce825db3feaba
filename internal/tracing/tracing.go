// Package tracing gives the coupon service OpenTelemetry spans (otelgrpc)
// with the DTM gid, branch and order number as attributes, exports them by
// OTLP when configured, and puts the trace id into every log line written
// with a context. Spans are made even with export off, so that log lines of
// one call, and of its caller when it sends traceparent, share an id.
package tracing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Config selects the export of spans.
type Config struct {
	// OTLPEndpoint is the OTLP/gRPC collector ("host:port"); empty: spans
	// are not exported.
	OTLPEndpoint string
	// Insecure sends to the collector without TLS.
	Insecure bool
	// SampleRatio is the share of new traces sampled for export (a call
	// that arrives sampled stays sampled).
	SampleRatio float64
	// ServiceName is the resource's service.name.
	ServiceName string
}

// Provider makes the service's spans.
type Provider struct {
	tp        *sdktrace.TracerProvider
	exporting bool
}

// New returns a provider exporting as cfg says.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	name := cfg.ServiceName
	if name == "" {
		name = "coupon"
	}
	// Without an exporter nothing is sampled: spans still carry trace and
	// span IDs (for the logs and the propagation headers) but record
	// nothing, which costs a fraction of a recorded span on every call.
	sampler := sdktrace.NeverSample()
	if cfg.OTLPEndpoint != "" {
		sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(name))),
		sdktrace.WithSampler(sampler),
	}
	if cfg.OTLPEndpoint != "" {
		eopts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
		if cfg.Insecure {
			eopts = append(eopts, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, eopts...)
		if err != nil {
			return nil, fmt.Errorf("otlp exporter %s: %w", cfg.OTLPEndpoint, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return &Provider{tp: sdktrace.NewTracerProvider(opts...), exporting: cfg.OTLPEndpoint != ""}, nil
}

// Tracer returns a tracer of the provider.
func (p *Provider) Tracer(name string) trace.Tracer { return p.tp.Tracer(name) }

// Shutdown flushes spans still buffered for export.
func (p *Provider) Shutdown(ctx context.Context) error { return p.tp.Shutdown(ctx) }

// ServerHandler is the gRPC stats handler making a span per call (health
// checks excepted), continuing W3C trace context sent by the caller.
func (p *Provider) ServerHandler() stats.Handler {
	return otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(p.tp),
		otelgrpc.WithMeterProvider(noop.NewMeterProvider()), // Prometheus has the RPC metrics
		otelgrpc.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return !strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.")
		}),
	)
}

// DTM's barrier metadata on branch calls.
var dtmKeys = []struct{ md, attr string }{
	{"dtm-gid", "dtm.gid"},
	{"dtm-branch_id", "dtm.branch_id"},
	{"dtm-op", "dtm.op"},
	{"dtm-trans_type", "dtm.trans_type"},
}

// Exporting reports whether spans are exported (an OTLP endpoint is set).
func (p *Provider) Exporting() bool { return p.exporting }

// ServerOptions are the gRPC server options of tracing. While spans are
// exported every call gets one (otelgrpc's stats handler). While they are
// not, the stats handler — which alone costs a copy of every call's
// metadata and about a sixth of a cheap call's CPU — is left out, and logs
// carry a trace id made only when a call logs: the caller's W3C trace id
// if it sent one, else a fresh one.
func (p *Provider) ServerOptions() []grpc.ServerOption {
	if p.exporting {
		return []grpc.ServerOption{grpc.StatsHandler(p.ServerHandler())}
	}
	return nil
}

// Annotate adds the DTM gid, branch and op and the order number to the
// call's span and to the log attributes of its context.
func Annotate(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	var attrs []attribute.KeyValue
	for _, k := range dtmKeys {
		if v := metadata.ValueFromIncomingContext(ctx, k.md); len(v) > 0 && v[0] != "" {
			attrs = append(attrs, attribute.String(k.attr, v[0]))
		}
	}
	if o := orderNo(req); o != "" {
		attrs = append(attrs, attribute.String("order_no", o))
	}
	if len(attrs) > 0 {
		trace.SpanFromContext(ctx).SetAttributes(attrs...)
		ctx = withLogAttrs(ctx, attrs)
	}
	return h(ctx, req)
}

// orderNo is the order number a request names: branch requests carry the
// order, others (returns) its number.
func orderNo(req any) string {
	if r, ok := req.(interface{ GetOrder() *couponv1.Order }); ok {
		return r.GetOrder().GetOrderNo()
	}
	if r, ok := req.(interface{ GetOrderNo() string }); ok {
		return r.GetOrderNo()
	}
	return ""
}

type logAttrsKey struct{}

func withLogAttrs(ctx context.Context, attrs []attribute.KeyValue) context.Context {
	la := make([]slog.Attr, 0, len(attrs))
	for _, a := range attrs {
		la = append(la, slog.String(string(a.Key), a.Value.AsString()))
	}
	if prev, ok := ctx.Value(logAttrsKey{}).([]slog.Attr); ok {
		la = append(append([]slog.Attr(nil), prev...), la...)
	}
	return context.WithValue(ctx, logAttrsKey{}, la)
}

// redacted are attribute keys whose values never reach a log: phone
// numbers and credentials.
var redacted = map[string]bool{"phone": true, "phone_number": true, "token": true, "authorization": true, "password": true}

// LogHandler wraps h: records logged with a context carry its trace and
// span ids and the call's DTM and order attributes, and attributes named
// like a phone number or a credential are replaced by "[redacted]".
func LogHandler(h slog.Handler) slog.Handler { return &logHandler{h: h} }

type logHandler struct{ h slog.Handler }

func (l *logHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

func (l *logHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		out.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	} else if id := callTraceID(ctx); id != "" {
		out.AddAttrs(slog.String("trace_id", id))
	}
	if la, ok := ctx.Value(logAttrsKey{}).([]slog.Attr); ok {
		out.AddAttrs(la...)
	}
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redact(a))
		return true
	})
	return l.h.Handle(ctx, out)
}

func (l *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	rs := make([]slog.Attr, len(as))
	for i, a := range as {
		rs[i] = redact(a)
	}
	return &logHandler{h: l.h.WithAttrs(rs)}
}

func (l *logHandler) WithGroup(name string) slog.Handler { return &logHandler{h: l.h.WithGroup(name)} }

func redact(a slog.Attr) slog.Attr {
	if redacted[strings.ToLower(a.Key)] {
		return slog.String(a.Key, "[redacted]")
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Value.Group()
		rs := make([]slog.Attr, len(g))
		for i, x := range g {
			rs[i] = redact(x)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(rs...)}
	}
	return a
}

// callTraceID is the trace id of a call logged without a span: the W3C
// traceparent the caller sent, else one made for the call on its first log
// line and kept for the others (Annotate leaves a holder in the context).
func callTraceID(ctx context.Context) string {
	h, _ := ctx.Value(traceIDKey{}).(*lazyTraceID)
	if h == nil {
		return ""
	}
	h.once.Do(func() {
		if v := metadata.ValueFromIncomingContext(ctx, "traceparent"); len(v) > 0 {
			// version-traceid-spanid-flags
			if parts := strings.Split(v[0], "-"); len(parts) == 4 && len(parts[1]) == 32 {
				h.id = parts[1]
				return
			}
		}
		var b [16]byte
		_, _ = rand.Read(b[:])
		h.id = hex.EncodeToString(b[:])
	})
	return h.id
}

type traceIDKey struct{}

type lazyTraceID struct {
	once sync.Once
	id   string
}

// WithCallTrace gives a call's context the holder of its log trace id
// (used while spans are not exported).
func WithCallTrace(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		return h(ctx, req)
	}
	return h(context.WithValue(ctx, traceIDKey{}, &lazyTraceID{}), req)
}
