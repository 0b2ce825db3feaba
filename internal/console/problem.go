package console

import (
	"errors"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// problem is a refusal as a page shows it: the service's reason in words,
// then its machine-readable reason and message.
type problem struct {
	Words   string
	Reason  string
	Field   string
	Message string
	// HTTP is the status the page answers with.
	HTTP int
}

// words says what each reason means to an operator.
var words = map[string]string{
	"INVALID_ARGUMENT":             "The service refused a field of the form.",
	"INVALID_RULE":                 "The usage rule does not compile.",
	"NOT_FOUND":                    "Nothing was found with that id or code.",
	"COUPON_NOT_FOUND":             "The user holds no coupon with that code.",
	"SOLD_OUT":                     "The template has no stock left.",
	"USER_LIMIT_REACHED":           "The user already holds as many coupons of this template as it allows.",
	"TEMPLATE_NOT_ACTIVE":          "The template is not active.",
	"CAMPAIGN_NOT_ACTIVE":          "The campaign is not active.",
	"REQUEST_ID_CONFLICT":          "This request id was already used for a different request.",
	"APPROVER_IS_CREATOR":          "You created this template, so you cannot approve it: someone else must (maker-checker).",
	"APPROVER_EDITED_RULE":         "You last changed this template's money rules, so you cannot approve it: someone else must (maker-checker).",
	"TEMPLATE_CHANGED":             "The template changed after you looked at it: review it again, then approve the version shown.",
	"INVALID_STATE_TRANSITION":     "That status change is not allowed from the current status.",
	"TEMPLATE_NOT_EDITABLE":        "Money rules are fixed once a template is approved.",
	"UNAUTHENTICATED":              "The service does not accept this token.",
	"PERMISSION_DENIED":            "This identity is not allowed to do that; the console needs the admin role.",
	"IDENTITY_MISMATCH":            "The form named someone other than the signed-in identity.",
	"RATE_LIMITED":                 "Too many requests: wait a moment and retry.",
	"UNAVAILABLE":                  "The service is briefly unavailable: retry (resubmitting the same form is safe).",
	"INTERNAL":                     "The service failed; its log has the details.",
	"WEBHOOKS_OFF":                 "Webhooks are off on this service: they run only with events on (events.url) and webhooks.enabled.",
	"INVALID_WEBHOOK_URL":          "The endpoint URL must be an absolute https URL, without credentials or a fragment.",
	"INSECURE_WEBHOOK_URL":         "Plain http is accepted only to loopback hosts: use https (or set webhooks.allow_http for a private network).",
	"UNKNOWN_EVENT_TYPE":           "The service publishes no events of that type.",
	"WEBHOOK_ENDPOINT_NOT_FOUND":   "No webhook endpoint has that id: it may have been deleted.",
	"WEBHOOK_EVENT_NOT_FOUND":      "That event cannot be sent again: it was never attempted, or the events stream no longer holds it.",
	"WEBHOOK_EVENT_NOT_SUBSCRIBED": "The endpoint does not subscribe to that event's type.",
}

// describe turns an error from a service call into a problem. Nothing was
// written when the service refused: it validates before it writes.
func describe(err error) *problem {
	if err == nil {
		return nil
	}
	var p *problem
	if errors.As(err, &p) {
		return p
	}
	st := status.Convert(err)
	p = &problem{Message: st.Message(), HTTP: runtime.HTTPStatusFromCode(st.Code())}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			p.Reason, p.Field = info.Reason, info.Metadata["field"]
		}
	}
	switch {
	case words[p.Reason] != "":
		p.Words = words[p.Reason]
	case st.Code() == codes.Unimplemented:
		p.Reason, p.Words = "UNIMPLEMENTED", "This build of the service does not implement that call yet."
	case st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded:
		p.Words = words["UNAVAILABLE"]
	default:
		p.Words = "The service refused: " + st.Code().String() + "."
	}
	return p
}

// invalid is a problem the console finds in a form before calling the
// service (a malformed number or time).
func invalid(field, msg string) *problem {
	return &problem{Words: words["INVALID_ARGUMENT"], Reason: "INVALID_ARGUMENT", Field: field, Message: field + " " + msg, HTTP: http.StatusBadRequest}
}

func (p *problem) Error() string { return p.Reason + ": " + p.Message }
