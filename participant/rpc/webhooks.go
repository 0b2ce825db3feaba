package rpc

import (
	"context"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/opencoupon/coupon/internal/webhook"
	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Webhooks is the webhook delivery the admin server manages: the
// endpoints of internal/webhook's Store and the Dispatcher's redelivery.
// Every change is made under actor and audit-logged by the implementation
// (entity participant.EntityWebhook), without the secret, and takes effect
// in the running dispatcher at once or within its refresh interval.
// Errors are *participant.Error with internal/webhook's reasons.
type Webhooks interface {
	// CreateEndpoint returns the endpoint and its secret, shown only here.
	CreateEndpoint(ctx context.Context, url string, types []string, actor participant.Actor) (webhook.Endpoint, string, error)
	ListEndpoints(ctx context.Context) ([]webhook.Endpoint, error)
	GetEndpoint(ctx context.Context, id int64) (webhook.Endpoint, error)
	// SetEnabled enables or disables endpoint id; reason says why it was
	// disabled.
	SetEnabled(ctx context.Context, id int64, enabled bool, reason string, actor participant.Actor) (webhook.Endpoint, error)
	DeleteEndpoint(ctx context.Context, id int64, actor participant.Actor) error
	ListDeliveries(ctx context.Context, endpointID int64, page webhook.Page) ([]webhook.Delivery, error)
	// Redeliver posts event eventID to endpoint endpointID once more and
	// returns the attempt, delivered or not.
	Redeliver(ctx context.Context, endpointID int64, eventID string, actor participant.Actor) (webhook.Delivery, error)
}

// Paging of ListWebhookDeliveries (the store's bounds).
const (
	defaultDeliveryPage = 50
	maxDeliveryPage     = 500
)

// webhooks returns the webhook delivery, or WEBHOOKS_OFF when the service
// runs without it.
func (a *Admin) webhooks() (Webhooks, error) {
	if a.hooks == nil {
		return nil, participant.Errorf(participant.EREFUSED, participant.ReasonWebhooksOff,
			"webhooks are off on this service: they need events (events.url) and webhooks.enabled")
	}
	return a.hooks, nil
}

// webhookActor resolves who makes a webhook change, as the Catalog's changes do.
func webhookActor(ctx context.Context, field, given, op string) (participant.Actor, error) {
	by, actor, err := participant.Principal(ctx, field, given, op)
	if err != nil {
		return participant.Actor{}, err
	}
	if strings.TrimSpace(by) == "" {
		return participant.Actor{}, participant.Invalid(field, "required")
	}
	actor.Identity = by
	return actor, nil
}

// CreateWebhookEndpoint registers an endpoint and returns it with its
// secret.
func (a *Admin) CreateWebhookEndpoint(ctx context.Context, r *couponv1.CreateWebhookEndpointRequest) (*couponv1.CreateWebhookEndpointResponse, error) {
	w, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	actor, err := webhookActor(ctx, "created_by", r.CreatedBy, "CreateWebhookEndpoint")
	if err != nil {
		return nil, err
	}
	ep, secret, err := w.CreateEndpoint(ctx, r.Url, r.EventTypes, actor)
	if err != nil {
		return nil, err
	}
	return &couponv1.CreateWebhookEndpointResponse{Endpoint: endpointPB(ep), Secret: secret}, nil
}

// ListWebhookEndpoints lists every endpoint.
func (a *Admin) ListWebhookEndpoints(ctx context.Context, _ *couponv1.ListWebhookEndpointsRequest) (*couponv1.ListWebhookEndpointsResponse, error) {
	w, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	eps, err := w.ListEndpoints(ctx)
	if err != nil {
		return nil, err
	}
	out := &couponv1.ListWebhookEndpointsResponse{}
	for _, ep := range eps {
		out.Endpoints = append(out.Endpoints, endpointPB(ep))
	}
	return out, nil
}

// GetWebhookEndpoint reads an endpoint.
func (a *Admin) GetWebhookEndpoint(ctx context.Context, r *couponv1.GetWebhookEndpointRequest) (*couponv1.WebhookEndpoint, error) {
	w, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	ep, err := w.GetEndpoint(ctx, r.EndpointId)
	if err != nil {
		return nil, err
	}
	return endpointPB(ep), nil
}

// EnableWebhookEndpoint enables an endpoint.
func (a *Admin) EnableWebhookEndpoint(ctx context.Context, r *couponv1.EnableWebhookEndpointRequest) (*couponv1.WebhookEndpoint, error) {
	w, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	actor, err := webhookActor(ctx, "updated_by", r.UpdatedBy, "EnableWebhookEndpoint")
	if err != nil {
		return nil, err
	}
	ep, err := w.SetEnabled(ctx, r.EndpointId, true, "", actor)
	if err != nil {
		return nil, err
	}
	return endpointPB(ep), nil
}

// DisableWebhookEndpoint disables an endpoint with a reason.
func (a *Admin) DisableWebhookEndpoint(ctx context.Context, r *couponv1.DisableWebhookEndpointRequest) (*couponv1.WebhookEndpoint, error) {
	w, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	actor, err := webhookActor(ctx, "updated_by", r.UpdatedBy, "DisableWebhookEndpoint")
	if err != nil {
		return nil, err
	}
	reason := strings.TrimSpace(r.Reason)
	if reason == "" {
		reason = "disabled by " + actor.Identity
	}
	ep, err := w.SetEnabled(ctx, r.EndpointId, false, reason, actor)
	if err != nil {
		return nil, err
	}
	return endpointPB(ep), nil
}

// DeleteWebhookEndpoint removes an endpoint.
func (a *Admin) DeleteWebhookEndpoint(ctx context.Context, r *couponv1.DeleteWebhookEndpointRequest) (*emptypb.Empty, error) {
	w, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	actor, err := webhookActor(ctx, "updated_by", r.UpdatedBy, "DeleteWebhookEndpoint")
	if err != nil {
		return nil, err
	}
	if err := w.DeleteEndpoint(ctx, r.EndpointId, actor); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// ListWebhookDeliveries pages through an endpoint's attempts, newest
// first; those of a deleted endpoint too. The page token is the ID of the
// last attempt of the page before.
func (a *Admin) ListWebhookDeliveries(ctx context.Context, r *couponv1.ListWebhookDeliveriesRequest) (*couponv1.ListWebhookDeliveriesResponse, error) {
	w, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	size := int(r.PageSize)
	switch {
	case size < 0 || size > maxDeliveryPage:
		return nil, participant.Invalid("page_size", "must be between 0 and %d", maxDeliveryPage)
	case size == 0:
		size = defaultDeliveryPage
	}
	var before int64
	if r.PageToken != "" {
		if before, err = strconv.ParseInt(r.PageToken, 10, 64); err != nil || before <= 0 {
			return nil, participant.Invalid("page_token", "is not a token this call returned")
		}
	}
	// No check that the endpoint exists: a deleted endpoint's history stays
	// readable.
	// One more than asked, to tell whether a next page exists.
	ds, err := w.ListDeliveries(ctx, r.EndpointId, webhook.Page{Before: before, Limit: min(size+1, maxDeliveryPage)})
	if err != nil {
		return nil, err
	}
	out := &couponv1.ListWebhookDeliveriesResponse{}
	if len(ds) > size || len(ds) == maxDeliveryPage {
		ds = ds[:size]
		out.NextPageToken = strconv.FormatInt(ds[len(ds)-1].ID, 10)
	}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, deliveryPB(d))
	}
	return out, nil
}

// RedeliverWebhookEvent sends an event to an endpoint once more.
func (a *Admin) RedeliverWebhookEvent(ctx context.Context, r *couponv1.RedeliverWebhookEventRequest) (*couponv1.WebhookDelivery, error) {
	w, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	actor, err := webhookActor(ctx, "operator", r.Operator, "RedeliverWebhookEvent")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(r.EventId) == "" {
		return nil, participant.Invalid("event_id", "required")
	}
	d, err := w.Redeliver(ctx, r.EndpointId, r.EventId, actor)
	if err != nil {
		return nil, err
	}
	return deliveryPB(d), nil
}

func endpointPB(e webhook.Endpoint) *couponv1.WebhookEndpoint {
	st := couponv1.WebhookEndpoint_STATUS_UNSPECIFIED
	switch e.Status {
	case webhook.StatusEnabled:
		st = couponv1.WebhookEndpoint_ENABLED
	case webhook.StatusDisabled:
		st = couponv1.WebhookEndpoint_DISABLED
	}
	return &couponv1.WebhookEndpoint{
		Id: e.ID, Url: e.URL, EventTypes: e.EventTypes, Status: st, ConsecutiveFailures: int32(e.ConsecutiveFailures),
		FailingSince: ts(e.FailingSince), DisabledReason: e.DisabledReason, CreatedBy: e.CreatedBy,
		CreatedAt: ts(e.CreatedAt), UpdatedAt: ts(e.UpdatedAt),
	}
}

func deliveryPB(d webhook.Delivery) *couponv1.WebhookDelivery {
	return &couponv1.WebhookDelivery{
		Id: d.ID, EndpointId: d.EndpointID, EventId: d.EventID, EventType: d.EventType, StreamSeq: d.StreamSeq,
		Attempt: int32(d.Attempt), Manual: d.Manual, StatusCode: int32(d.StatusCode), LatencyMs: d.Latency.Milliseconds(),
		Error: d.Error, Delivered: d.Delivered, GaveUp: d.GaveUp, CreatedAt: ts(d.CreatedAt),
	}
}
