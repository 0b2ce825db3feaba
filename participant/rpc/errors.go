// Package rpc serves the coupon service over gRPC: it turns requests into
// domain calls and domain errors into gRPC statuses, in one place.
package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"

	"google.golang.org/grpc"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/participant"
)

// Domain is the google.rpc.ErrorInfo domain of every error we return.
const Domain = "coupon"

var codeOf = map[participant.Code]codes.Code{
	participant.EINVALID:         codes.InvalidArgument,
	participant.EUNAUTHENTICATED: codes.Unauthenticated,
	participant.EPERMISSION:      codes.PermissionDenied,
	participant.ENOTFOUND:        codes.NotFound,
	participant.EREFUSED:         codes.FailedPrecondition,
	participant.EABORTED:         codes.Aborted,
	participant.ERATELIMIT:       codes.ResourceExhausted,
	participant.EUNAVAILABLE:     codes.Unavailable,
	participant.EINTERNAL:        codes.Internal,
}

// UnaryErrors is the one place where handlers' errors become gRPC
// statuses: every handler returns domain errors and this interceptor maps
// them (see Status).
func UnaryErrors(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err != nil {
			return nil, Status(ctx, log, err)
		}
		return resp, nil
	}
}

// Status maps any error to a gRPC status carrying a google.rpc.ErrorInfo.
// Business refusals keep their message. Transient and internal failures
// never show driver text to the client: it goes to the log, once, here,
// with a reference that the status carries (ErrorInfo metadata "ref") so
// the two can be matched.
func Status(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isDomain(err) {
		return err
	}
	code, reason, msg := codes.Internal, participant.ReasonInternal, "internal error"
	var meta map[string]string
	var e *participant.Error
	hide := func(level slog.Level, what string) {
		ref := newRef()
		meta = map[string]string{"ref": ref}
		msg = what + " (ref " + ref + ")"
		log.Log(ctx, level, "request failed", "ref", ref, "reason", reason, "err", err)
	}
	switch {
	case errors.As(err, &e):
		code, reason, msg, meta = codeOf[e.Code], e.Reason, e.Message, e.Metadata
		switch e.Code {
		case participant.EUNAVAILABLE:
			hide(slog.LevelWarn, "temporarily unavailable; retry with the same request id")
		case participant.EINTERNAL:
			hide(slog.LevelError, "internal error")
		}
	case errors.Is(err, context.DeadlineExceeded):
		code, reason, msg = codes.DeadlineExceeded, participant.ReasonUnavailable, "deadline exceeded"
	case errors.Is(err, context.Canceled):
		code, reason, msg = codes.Canceled, participant.ReasonUnavailable, "canceled"
	default:
		hide(slog.LevelError, "internal error")
	}
	st := status.New(code, msg)
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: meta}); derr == nil {
		st = d
	}
	return st.Err()
}

func newRef() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func isDomain(err error) bool {
	var e *participant.Error
	return errors.As(err, &e)
}
