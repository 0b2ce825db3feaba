package participant

import (
	"errors"
	"fmt"
	"time"
)

// Code classifies an error for the transport: one gRPC code per Code.
type Code string

// Error codes. The gRPC adapter maps each to exactly one status code.
const (
	EINVALID         Code = "invalid"         // bad input: InvalidArgument
	EUNAUTHENTICATED Code = "unauthenticated" // no valid credential: Unauthenticated
	EPERMISSION      Code = "permission"      // credential without the right: PermissionDenied
	ENOTFOUND        Code = "not_found"       // NotFound
	EREFUSED         Code = "refused"         // business refusal: FailedPrecondition
	EABORTED         Code = "aborted"         // TCC Try refusal: Aborted, so DTM rolls back
	ERATELIMIT       Code = "rate_limit"      // ResourceExhausted
	ETOOLARGE        Code = "too_large"       // a request over a size limit: ResourceExhausted
	EUNIMPLEMENTED   Code = "unimplemented"   // no such method: Unimplemented
	EUNAVAILABLE     Code = "unavailable"     // transient: Unavailable, retry
	EINTERNAL        Code = "internal"        // Internal
)

// Reasons are stable, machine-readable and sent as google.rpc.ErrorInfo.reason.
const (
	ReasonInvalidArgument        = "INVALID_ARGUMENT"
	ReasonNotFound               = "NOT_FOUND"
	ReasonSoldOut                = "SOLD_OUT"
	ReasonUserLimitReached       = "USER_LIMIT_REACHED"
	ReasonTemplateNotActive      = "TEMPLATE_NOT_ACTIVE"
	ReasonCampaignNotActive      = "CAMPAIGN_NOT_ACTIVE"
	ReasonRequestIDConflict      = "REQUEST_ID_CONFLICT"
	ReasonApproverIsCreator      = "APPROVER_IS_CREATOR"
	ReasonApproverEditedRule     = "APPROVER_EDITED_RULE"
	ReasonTemplateChanged        = "TEMPLATE_CHANGED"
	ReasonInvalidStateTransition = "INVALID_STATE_TRANSITION"
	ReasonTemplateNotEditable    = "TEMPLATE_NOT_EDITABLE"
	ReasonCouponNotAvailable     = "COUPON_NOT_AVAILABLE"
	ReasonCouponExpired          = "COUPON_EXPIRED"
	ReasonRuleNotMet             = "RULE_NOT_MET"
	ReasonDailyUseLimitReached   = "DAILY_USE_LIMIT_REACHED"
	ReasonMissingBarrier         = "MISSING_BARRIER"
	ReasonRateLimited            = "RATE_LIMITED"
	ReasonUnavailable            = "UNAVAILABLE"
	ReasonInvalidRule            = "INVALID_RULE"
	ReasonInternal               = "INTERNAL"
	ReasonUnauthenticated        = "UNAUTHENTICATED"
	ReasonPermissionDenied       = "PERMISSION_DENIED"
	ReasonIdentityMismatch       = "IDENTITY_MISMATCH"
	ReasonCouponNotReturnable    = "COUPON_NOT_RETURNABLE"
	ReasonCouponNotFound         = "COUPON_NOT_FOUND"
	// A return found the coupon still LOCKED for the refunded order: its
	// Confirm (or Cancel) has not run yet. EREFUSED, so FailedPrecondition,
	// DTM's ONGOING: the message branch is retried at a fixed interval.
	ReasonCouponLockedPendingConfirm = "COUPON_LOCKED_PENDING_CONFIRM"
	// ReasonPhoneBoundToOtherUser refuses binding a phone that another user holds.
	ReasonPhoneBoundToOtherUser = "PHONE_BOUND_TO_OTHER_USER"
	// ReasonWebhooksOff refuses the webhook calls of a service that runs
	// without webhooks (events off, or webhooks disabled). EREFUSED. The
	// other webhook reasons are internal/webhook's.
	ReasonWebhooksOff = "WEBHOOKS_OFF"
)

// Error is the one error type of the domain: a code for the transport, a
// stable reason for machines and a message for people.
type Error struct {
	Code     Code
	Reason   string
	Message  string
	Metadata map[string]string
	// RetryDelay is how long a refused client should wait before it
	// retries. Every RATE_LIMITED refusal carries it to the client as a
	// google.rpc.RetryInfo, even when it rounds to zero.
	RetryDelay time.Duration
	// Cause is the infrastructure error behind a transient one, for logs
	// and errors.Is; clients never see it.
	Cause error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EINVALID error naming the offending field.
func Invalid(field, format string, args ...any) *Error {
	e := Errorf(EINVALID, ReasonInvalidArgument, field+": "+format, args...)
	e.Metadata = map[string]string{"field": field}
	return e
}

// ErrorCode returns the code of err, EINTERNAL for errors that are not *Error.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorReason returns the reason of err, ReasonInternal for foreign errors.
func ErrorReason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonInternal
}

// couponNotFound is the one answer for a coupon the user does not hold,
// whether no such coupon exists or another user holds it: the two must not
// be told apart, or codes could be probed for existence. code is the
// transport class (ENOTFOUND for a read, EABORTED for a Try).
func couponNotFound(code Code, coupon string) *Error {
	return Errorf(code, ReasonCouponNotFound, "coupon %s not found", coupon)
}

// Unavailable wraps a transient infrastructure error.
func Unavailable(what string, err error) error {
	return &Error{Code: EUNAVAILABLE, Reason: ReasonUnavailable, Message: what + ": " + err.Error(), Cause: err}
}

// Sentinel errors that stores return and the service turns into refusals.
var (
	// ErrSoldOut: every sub-key of the template's stock is empty.
	ErrSoldOut = errors.New("sold out")
	// ErrStockMissing: the counters are gone (Redis lost them) and must be rebuilt.
	ErrStockMissing = errors.New("stock counters missing")
	// ErrDuplicateRequest: the shard already holds a coupon for the request ID.
	ErrDuplicateRequest = errors.New("duplicate request id")
	// ErrCommitUnknown: the commit's outcome is unknown (connection lost or
	// deadline passed while committing). Stock is then not given back: the
	// record may exist, and a retry with the same request ID finds it.
	ErrCommitUnknown = errors.New("commit outcome unknown")
)

// ErrPhoneBound: a store refused a pending coupon because the phone was
// bound to a user meanwhile; the claim goes to the user instead.
var ErrPhoneBound = errors.New("phone bound to a user")
