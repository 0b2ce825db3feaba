package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
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
