package shop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
)

// Domain is the google.rpc.ErrorInfo domain of the shop's errors.
const Domain = "shop"

// Error is the shop's one error type: a gRPC code for the transport and a
// stable reason for machines. Every other error is an internal error.
type Error struct {
	Code    codes.Code
	Reason  shopv1.ErrorReason
	Message string
}

func (e *Error) Error() string { return e.Message }

// GRPCStatus makes grpc-go send e as its code with an ErrorInfo detail.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Message)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: Domain, Reason: e.Reason.String()}); err == nil {
		return d
	}
	return st
}

func errorf(code codes.Code, reason shopv1.ErrorReason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func invalid(field, format string, args ...any) *Error {
	return errorf(codes.InvalidArgument, shopv1.ErrorReason_INVALID_ARGUMENT, field+": "+format, args...)
}

// refused is a branch action's refusal (TCC Try, Saga action): Aborted, so
// DTM rolls the transaction back. The message starts with the reason: DTM
// passes a Saga branch's refusal on as its message only (the rollback
// reason), and refusalIn reads the reason back from it.
func refused(reason shopv1.ErrorReason, format string, args ...any) *Error {
	return errorf(codes.Aborted, reason, reason.String()+": "+format, args...)
}

// refusalIn finds a shop refusal in a message DTM passed on: its reason and
// the rest of the message.
func refusalIn(message string) (reason shopv1.ErrorReason, detail string, ok bool) {
	name, detail, found := strings.Cut(message, ": ")
	r, known := shopv1.ErrorReason_value[name]
	if !found || !known || r == 0 {
		return 0, "", false
	}
	return shopv1.ErrorReason(r), detail, true
}

// UnaryErrors is the one place errors become gRPC statuses: *Error keeps its
// code, a context error its matching code, and anything else is logged and
// sent as Internal so DTM retries branch calls that failed on the way.
func UnaryErrors(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		var e *Error
		switch {
		case errors.As(err, &e):
			if e.Code == codes.Aborted {
				log.InfoContext(ctx, "branch refused", "method", info.FullMethod, "reason", e.Reason.String(), "err", err)
			}
			return nil, e
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return nil, status.FromContextError(err).Err()
		default:
			log.ErrorContext(ctx, "request failed", "method", info.FullMethod, "err", err)
			return nil, errorf(codes.Internal, shopv1.ErrorReason_INTERNAL, "internal error")
		}
	}
}
