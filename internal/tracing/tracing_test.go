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
