// Package webhook delivers the coupon service's lifecycle events to HTTP
// endpoints that admins register: a Store keeps the endpoints and a record
// of every attempt in the main database, a Dispatcher reads the events from
// the COUPON_EVENTS JetStream stream, one durable consumer per endpoint, and
// POSTs each one signed with the endpoint's secret, retrying with backoff.
// Receivers check the signature with Verify. docs/webhooks.md is the
// receiver's guide.
package webhook

import (
	"slices"
	"time"
)

// Status is an endpoint's state.
type Status string

// Endpoint states. Only ENABLED endpoints are delivered to.
const (
	StatusEnabled  Status = "ENABLED"
	StatusDisabled Status = "DISABLED"
)

// Reasons of the errors this package returns, as participant.Error.Reason.
const (
	ReasonInvalidURL         = "INVALID_WEBHOOK_URL"
	ReasonInsecureURL        = "INSECURE_WEBHOOK_URL"
	ReasonUnknownEventType   = "UNKNOWN_EVENT_TYPE"
	ReasonEndpointNotFound   = "WEBHOOK_ENDPOINT_NOT_FOUND"
	ReasonEventNotFound      = "WEBHOOK_EVENT_NOT_FOUND"
	ReasonEventNotSubscribed = "WEBHOOK_EVENT_NOT_SUBSCRIBED"
)

// SubjectPrefix is the prefix of the events' subjects: an event of type T
// is published on SubjectPrefix+T.
const SubjectPrefix = "coupon.events."

// eventTypes are the types an endpoint may subscribe to, the types of
// proto/coupon/events/v1's Event.
var eventTypes = []string{
	"coupon.claimed",
	"coupon.locked",
	"coupon.used",
	"coupon.released",
	"coupon.returned",
	"coupon.expired",
	"template.changed",
	"stock.added",
}

// EventTypes returns the event types an endpoint may subscribe to.
func EventTypes() []string { return slices.Clone(eventTypes) }

// Endpoint is a registered receiver. Its secret is not part of it: it is
// shown once, by Store.CreateEndpoint.
type Endpoint struct {
	ID  int64
	URL string
	// EventTypes are the types delivered, sorted; empty means every type.
	EventTypes []string
	Status     Status
	// ConsecutiveFailures counts the failed attempts since the last
	// delivered one, and FailingSince is when that run began (zero when the
	// last attempt was delivered).
	ConsecutiveFailures int
	FailingSince        time.Time
	// DisabledReason says why a DISABLED endpoint was disabled.
	DisabledReason string
	CreatedBy      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Accepts reports whether the endpoint subscribes to events of type typ.
func (e Endpoint) Accepts(typ string) bool {
	return len(e.EventTypes) == 0 || slices.Contains(e.EventTypes, typ)
}

// Delivery is one attempt to deliver one event to one endpoint.
type Delivery struct {
	ID         int64
	EndpointID int64
	EventID    string
	EventType  string
	// StreamSeq is the event's sequence in the stream, which Redeliver
	// reads it back by.
	StreamSeq uint64
	// Attempt numbers the automatic attempts at this event from 1; a manual
	// one (Redeliver) carries the number of attempts made before it plus one.
	Attempt int
	Manual  bool
	// StatusCode is the receiver's HTTP status, 0 when there was no
	// response (connection refused, timeout).
	StatusCode int
	Latency    time.Duration
	// Error says why an attempt failed: the transport error, or the status
	// and the start of the response body.
	Error     string
	Delivered bool
	// GaveUp marks the last attempt at an event whose retry horizon passed:
	// it will not be retried.
	GaveUp    bool
	CreatedAt time.Time
}

// Page selects a page of deliveries, newest first.
type Page struct {
	// Before returns deliveries with an ID below it; 0 starts at the newest.
	Before int64
	// Limit is the page size: 50 when 0, at most 500.
	Limit int
}
