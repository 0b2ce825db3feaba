package app

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/rpc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// chain runs h behind the error map and then each of ics, outermost
// first, as Open chains them.
func chain(log *slog.Logger, info *grpc.UnaryServerInfo, h grpc.UnaryHandler, ics ...grpc.UnaryServerInterceptor) (any, error) {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], h
		h = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, next) }
	}
	return rpc.UnaryErrors(log)(context.Background(), nil, info, h)
}

// TestPanicsAnswerBareInternal: a panic in the handler, caught by the
// recoverer or by the deadline's goroutine, reaches the client as the bare
// Internal "internal error" it always was (no ErrorInfo, so claims_total
// still counts it as "Internal"), and is logged once, with its stack.
func TestPanicsAnswerBareInternal(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: couponv1.CouponService_ClaimCoupon_FullMethodName}
	boom := func(context.Context, any) (any, error) { panic("boom") }
	for _, tc := range []struct {
		name     string
		deadline time.Duration
	}{
		{"recoverer", -1},
		{"deadline goroutine", time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.Buffer
			a := &App{log: slog.New(slog.NewTextHandler(&logs, nil)), cfg: Config{Deadlines: Deadlines{Methods: map[string]time.Duration{"CouponService/ClaimCoupon": tc.deadline}}}}
			_, err := chain(a.log, info, boom, a.recoverer, a.deadline)
			a.detached.Wait()
			st := status.Convert(err)
			if st.Code() != codes.Internal || st.Message() != "internal error" || len(st.Details()) != 0 {
				t.Errorf("panic answered %v %q %v, want a bare Internal \"internal error\"", st.Code(), st.Message(), st.Details())
			}
			if out := logs.String(); strings.Count(out, "msg=panic") != 1 || strings.Contains(out, "request failed") {
				t.Errorf("log, want the panic once and no mapping line:\n%s", out)
			}
		})
	}
}

// TestLateHandlerErrorLogged: a call answered at its deadline reaches the
// client as DeadlineExceeded; the error its handler returns afterwards
// reaches no client and no error map, so the deadline logs it.
func TestLateHandlerErrorLogged(t *testing.T) {
	var logs testenv.Buffer
	a := &App{log: slog.New(slog.NewTextHandler(&logs, nil)), cfg: Config{Deadlines: Deadlines{Methods: map[string]time.Duration{"CouponService/ClaimCoupon": 10 * time.Millisecond}}}}
	info := &grpc.UnaryServerInfo{FullMethod: couponv1.CouponService_ClaimCoupon_FullMethodName}
	release := make(chan struct{})
	late := func(context.Context, any) (any, error) {
		<-release // ignores its context, as a stuck dependency client would
		return nil, participant.Unavailable("write coupon", errors.New("connection reset"))
	}
	_, err := chain(a.log, info, late, a.recoverer, a.deadline)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call past its deadline answered %v, want DeadlineExceeded", err)
	}
	close(release)
	a.detached.Wait()
	if out := logs.String(); !strings.Contains(out, "call past its deadline ended in an error") || !strings.Contains(out, "connection reset") {
		t.Errorf("log lacks the late handler's error:\n%s", out)
	}
}
