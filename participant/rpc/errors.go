// Package rpc serves the coupon service over gRPC: it turns requests into
// domain calls and domain errors into gRPC statuses, in one place.
package rpc

import (
	"context"
	"errors"
	"log/slog"

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

// Status maps any error to a gRPC status carrying a google.rpc.ErrorInfo.
// Errors that are not domain errors are logged here, once, and hidden.
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
	switch {
	case errors.As(err, &e):
		code, reason, msg, meta = codeOf[e.Code], e.Reason, e.Message, e.Metadata
		if e.Code == participant.EINTERNAL || e.Code == participant.EUNAVAILABLE {
			log.WarnContext(ctx, "request failed", "reason", e.Reason, "err", err)
		}
	case errors.Is(err, context.DeadlineExceeded):
		code, reason, msg = codes.DeadlineExceeded, participant.ReasonUnavailable, "deadline exceeded"
	case errors.Is(err, context.Canceled):
		code, reason, msg = codes.Canceled, participant.ReasonUnavailable, "canceled"
	default:
		log.ErrorContext(ctx, "internal error", "err", err)
	}
	st := status.New(code, msg)
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: meta}); derr == nil {
		st = d
	}
	return st.Err()
}

func isDomain(err error) bool {
	var e *participant.Error
	return errors.As(err, &e)
}
