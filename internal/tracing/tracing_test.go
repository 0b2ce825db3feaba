package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/opencoupon/coupon/internal/tracing"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestLogsCarryTraceAndBranchAndNoSecrets(t *testing.T) {
	p, err := tracing.New(context.Background(), tracing.Config{SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(&buf, nil))).With("token", "local-app")

	ctx, span := p.Tracer("test").Start(context.Background(), "call")
	defer span.End()
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("dtm-gid", "g-1", "dtm-branch_id", "01", "dtm-op", "try"))
	req := &couponv1.CouponBranchRequest{Order: &couponv1.Order{OrderNo: "order-7"}}
	_, err = tracing.Annotate(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/coupon.v1.CouponService/LockCoupon"}, func(ctx context.Context, _ any) (any, error) {
		log.InfoContext(ctx, "locked", "phone", "13800000000", slog.Group("req", "phone_number", "13900000000"))
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	want := map[string]string{
		"trace_id": span.SpanContext().TraceID().String(), "dtm.gid": "g-1", "dtm.branch_id": "01", "dtm.op": "try",
		"order_no": "order-7", "phone": "[redacted]", "token": "[redacted]",
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("log attribute %s = %v, want %s (line %s)", k, rec[k], v, buf.String())
		}
	}
	for _, secret := range []string{"13800000000", "13900000000", "local-app"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("log line holds %s: %s", secret, buf.String())
		}
	}
}

// TestLogsCarryTraceWithoutExport: with spans not exported, a call's log
// lines still carry a trace id: the caller's W3C trace id when it sent one,
// else one made for the call and the same on every line.
func TestLogsCarryTraceWithoutExport(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(&buf, nil)))
	call := func(md metadata.MD) []string {
		buf.Reset()
		ctx := metadata.NewIncomingContext(context.Background(), md)
		_, err := tracing.WithCallTrace(ctx, nil, &grpc.UnaryServerInfo{}, func(ctx context.Context, _ any) (any, error) {
			log.InfoContext(ctx, "one")
			log.InfoContext(ctx, "two")
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
			id, _ := rec["trace_id"].(string)
			ids = append(ids, id)
		}
		return ids
	}
	ids := call(metadata.MD{})
	if len(ids) != 2 || len(ids[0]) != 32 || ids[0] != ids[1] {
		t.Fatalf("trace ids of one call = %q, want one 32-hex id twice", ids)
	}
	const sent = "4bf92f3577b34da6a3ce929d0e0e4736"
	if ids := call(metadata.Pairs("traceparent", "00-"+sent+"-00f067aa0ba902b7-01")); ids[0] != sent {
		t.Fatalf("trace id = %q, want the caller's %s", ids[0], sent)
	}
}
