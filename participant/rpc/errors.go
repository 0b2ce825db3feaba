// Package rpc serves the coupon service over gRPC: it turns requests into
// domain calls and domain errors into gRPC statuses, in one place (this
// file: no other code in the service builds a status).
package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

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
	participant.ETOOLARGE:        codes.ResourceExhausted,
	participant.EUNIMPLEMENTED:   codes.Unimplemented,
	participant.EUNAVAILABLE:     codes.Unavailable,
	participant.EINTERNAL:        codes.Internal,
}

// ErrPanic is what an interceptor returns for a call whose handler
// panicked, after logging the panic with its stack: the client gets a bare
// Internal "internal error", with no ErrorInfo, as it always has.
var ErrPanic = errors.New("handler panicked")

// UnaryErrors applies the map (Status) to every call's error. The server
// chains it as the outermost interceptor that can see a domain error: only
// the metrics, which count by gRPC code, and the tracing interceptors,
// which put the trace and order attributes into the context it logs with,
// sit outside it. Every interceptor inside it and every handler returns
// domain errors (*participant.Error) and never builds a status.
func UnaryErrors(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err != nil {
			return nil, Status(ctx, log, err)
		}
		return resp, nil
	}
}

// StreamErrors is UnaryErrors for streaming calls.
func StreamErrors(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return Status(ss.Context(), log, h(srv, ss))
	}
}

// Status maps any error to a gRPC status carrying a google.rpc.ErrorInfo.
// Business refusals keep their message. Transient and internal failures
// never show driver text to the client: it goes to the log, once, here,
// with a reference that the status carries (ErrorInfo metadata "ref") so
// the two can be matched. A RATE_LIMITED refusal also carries a
// google.rpc.RetryInfo with its RetryDelay; ErrPanic is a bare Internal.
func Status(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isDomain(err) {
		return err
	}
	if errors.Is(err, ErrPanic) {
		return status.Error(codes.Internal, "internal error")
	}
	code, reason, msg := codes.Internal, participant.ReasonInternal, "internal error"
	var meta map[string]string
	var retry *errdetails.RetryInfo
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
		if e.Reason == participant.ReasonRateLimited {
			retry = &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryDelay)}
		}
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
	if retry != nil {
		if d, derr := st.WithDetails(retry); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// reasonOfCode names the ErrorInfo reason of a status made outside this
// map, by code.
var reasonOfCode = map[codes.Code]string{
	codes.InvalidArgument:  participant.ReasonInvalidArgument,
	codes.NotFound:         participant.ReasonNotFound,
	codes.Unavailable:      participant.ReasonUnavailable,
	codes.DeadlineExceeded: participant.ReasonUnavailable,
	codes.Unauthenticated:  participant.ReasonUnauthenticated,
	codes.PermissionDenied: participant.ReasonPermissionDenied,
	codes.Internal:         participant.ReasonInternal,
}

// WithReason gives a status made outside this map (by the HTTP gateway's
// runtime for a body that is not JSON or an unknown path, or by the gRPC
// client when the listener is unreachable) the ErrorInfo of its code when
// it carries none, so every error a client sees names a reason, as the
// service's own do. Statuses with an ErrorInfo, and codes with no reason,
// are returned as they are.
func WithReason(st *status.Status) *status.Status {
	reason, ok := reasonOfCode[st.Code()]
	if !ok || hasErrorInfo(st) {
		return st
	}
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); err == nil {
		return d
	}
	return st
}

func hasErrorInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.ErrorInfo); ok {
			return true
		}
	}
	return false
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
