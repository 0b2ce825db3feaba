package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/rpc"
)

// TestStatusHidesDriverText: refusals keep their message; transient and
// internal failures show the client a reference, never the driver's text,
// which goes to the log under the same reference.
func TestStatusHidesDriverText(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	secret := "dial tcp 10.1.2.3:3306: connect: connection refused"
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason string
		hidden bool
	}{
		{participant.Unavailable("write coupon", errors.New(secret)), codes.Unavailable, "UNAVAILABLE", true},
		{errors.New(secret), codes.Internal, "INTERNAL", true},
		{participant.Errorf(participant.EREFUSED, participant.ReasonSoldOut, "template 7 is sold out"), codes.FailedPrecondition, "SOLD_OUT", false},
	} {
		logs.Reset()
		st, _ := status.FromError(rpc.Status(context.Background(), log, tc.err))
		var info *errdetails.ErrorInfo
		for _, d := range st.Details() {
			info, _ = d.(*errdetails.ErrorInfo)
		}
		if st.Code() != tc.code || info == nil || info.Reason != tc.reason {
			t.Fatalf("Status(%v) = %v %v, want %s %s", tc.err, st.Code(), info, tc.code, tc.reason)
		}
		if !tc.hidden {
			if st.Message() != tc.err.Error() {
				t.Fatalf("refusal message = %q, want %q", st.Message(), tc.err.Error())
			}
			continue
		}
		ref := info.Metadata["ref"]
		if strings.Contains(st.Message(), "10.1.2.3") || ref == "" || !strings.Contains(st.Message(), ref) {
			t.Fatalf("client sees %q (ref %q), want a reference and no driver text", st.Message(), ref)
		}
		if !strings.Contains(logs.String(), ref) || !strings.Contains(logs.String(), "10.1.2.3") {
			t.Fatalf("log %q lacks the reference or the detail", logs.String())
		}
	}
}

// TestStatusDetails: the map gives every domain error its ErrorInfo, every
// RATE_LIMITED refusal a RetryInfo with its delay (zero included), and a
// recovered panic a bare Internal with no details, as clients have always
// seen them.
func TestStatusDetails(t *testing.T) {
	limited := func(code participant.Code, delay time.Duration) error {
		e := participant.Errorf(code, participant.ReasonRateLimited, "slow down")
		e.RetryDelay = delay
		return e
	}
	tests := []struct {
		name      string
		err       error
		code      codes.Code
		msg       string
		reason    string // "": no ErrorInfo
		retry     time.Duration
		withRetry bool
	}{
		{"rate limited", limited(participant.ERATELIMIT, 250*time.Millisecond), codes.ResourceExhausted, "slow down", "RATE_LIMITED", 250 * time.Millisecond, true},
		{"rate limited branch", limited(participant.EUNAVAILABLE, time.Second), codes.Unavailable, "", "RATE_LIMITED", time.Second, true},
		{"rate limited, no delay", limited(participant.ERATELIMIT, 0), codes.ResourceExhausted, "slow down", "RATE_LIMITED", 0, true},
		{"too large", participant.Errorf(participant.ETOOLARGE, "BODY_TOO_LARGE", "too big"), codes.ResourceExhausted, "too big", "BODY_TOO_LARGE", 0, false},
		{"unimplemented", participant.Errorf(participant.EUNIMPLEMENTED, "METHOD_NOT_ALLOWED", "no such method"), codes.Unimplemented, "no such method", "METHOD_NOT_ALLOWED", 0, false},
		{"unauthenticated", participant.Errorf(participant.EUNAUTHENTICATED, participant.ReasonUnauthenticated, "who are you"), codes.Unauthenticated, "who are you", "UNAUTHENTICATED", 0, false},
		{"panic", rpc.ErrPanic, codes.Internal, "internal error", "", 0, false},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "deadline exceeded", "UNAVAILABLE", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			st := status.Convert(rpc.Status(context.Background(), slog.New(slog.NewJSONHandler(&logs, nil)), tc.err))
			var info *errdetails.ErrorInfo
			var retry *errdetails.RetryInfo
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.ErrorInfo:
					info = d
				case *errdetails.RetryInfo:
					retry = d
				}
			}
			if st.Code() != tc.code || tc.msg != "" && st.Message() != tc.msg {
				t.Errorf("status %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			if got := info.GetReason(); got != tc.reason || info != nil && info.GetDomain() != rpc.Domain {
				t.Errorf("ErrorInfo %v, want reason %q in domain %s", info, tc.reason, rpc.Domain)
			}
			if (retry != nil) != tc.withRetry || retry != nil && retry.GetRetryDelay().AsDuration() != tc.retry {
				t.Errorf("RetryInfo %v, want present %v with %s", retry, tc.withRetry, tc.retry)
			}
			if tc.err == rpc.ErrPanic && logs.Len() > 0 {
				t.Errorf("a panic was logged again by the map: %s", logs.String())
			}
		})
	}
}

// TestWithReason: a status made outside the map gets the ErrorInfo of its
// code; one with an ErrorInfo, or of a code with no reason, is kept.
func TestWithReason(t *testing.T) {
	mapped := status.Convert(rpc.Status(context.Background(), slog.New(slog.DiscardHandler),
		participant.Errorf(participant.EREFUSED, participant.ReasonSoldOut, "sold out")))
	tests := []struct {
		name   string
		st     *status.Status
		reason string
	}{
		{"not json", status.New(codes.InvalidArgument, "bad body"), "INVALID_ARGUMENT"},
		{"unknown path", status.New(codes.NotFound, "Not Found"), "NOT_FOUND"},
		{"listener unreachable", status.New(codes.Unavailable, "connection refused"), "UNAVAILABLE"},
		{"deadline", status.New(codes.DeadlineExceeded, "late"), "UNAVAILABLE"},
		{"mapped already", mapped, "SOLD_OUT"},
		{"no reason for the code", status.New(codes.Aborted, "aborted"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := rpc.WithReason(tc.st)
			var reasons []string
			for _, d := range got.Details() {
				if ei, ok := d.(*errdetails.ErrorInfo); ok {
					reasons = append(reasons, ei.GetReason())
				}
			}
			want := []string{tc.reason}
			if tc.reason == "" {
				want = nil
			}
			if !slices.Equal(reasons, want) || got.Code() != tc.st.Code() || got.Message() != tc.st.Message() {
				t.Errorf("WithReason = %v %q reasons %v, want %v %q reasons %v", got.Code(), got.Message(), reasons, tc.st.Code(), tc.st.Message(), want)
			}
		})
	}
}

// TestStreamErrors: a stream interceptor's domain error reaches the
// client as its status.
func TestStreamErrors(t *testing.T) {
	refuse := func(any, grpc.ServerStream) error {
		return participant.Errorf(participant.EPERMISSION, participant.ReasonPermissionDenied, "no")
	}
	err := rpc.StreamErrors(slog.New(slog.DiscardHandler))(nil, ctxStream{}, &grpc.StreamServerInfo{}, refuse)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream refusal = %v, want PermissionDenied", err)
	}
	if err := rpc.StreamErrors(slog.New(slog.DiscardHandler))(nil, ctxStream{}, &grpc.StreamServerInfo{}, func(any, grpc.ServerStream) error { return nil }); err != nil {
		t.Fatalf("stream that succeeded = %v, want nil", err)
	}
}

type ctxStream struct{ grpc.ServerStream }

func (ctxStream) Context() context.Context { return context.Background() }
