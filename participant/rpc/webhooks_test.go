package rpc_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/webhook"
	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/rpc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// fakeHooks is rpc.Webhooks over a slice of deliveries, newest first, of
// endpoint 1. It records the actors of the changes.
type fakeHooks struct {
	rpc.Webhooks
	deliveries []webhook.Delivery
	actors     []participant.Actor
}

func (f *fakeHooks) ListDeliveries(_ context.Context, id int64, p webhook.Page) ([]webhook.Delivery, error) {
	var out []webhook.Delivery
	for _, d := range f.deliveries {
		if d.EndpointID == id && (p.Before == 0 || d.ID < p.Before) && len(out) < p.Limit {
			out = append(out, d)
		}
	}
	return out, nil
}

func (f *fakeHooks) CreateEndpoint(_ context.Context, url string, types []string, actor participant.Actor) (webhook.Endpoint, string, error) {
	f.actors = append(f.actors, actor)
	return webhook.Endpoint{ID: 1, URL: url, EventTypes: types, Status: webhook.StatusEnabled, CreatedBy: actor.Identity}, "whsec_x", nil
}

// code returns the code and the ErrorInfo reason a handler's error maps to.
func code(err error) (codes.Code, string) {
	st := status.Convert(rpc.Status(context.Background(), slog.New(slog.DiscardHandler), err))
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), ei.Reason
		}
	}
	return st.Code(), ""
}

func TestWebhooksOffAnswersFailedPrecondition(t *testing.T) {
	a := rpc.NewAdmin(nil, nil, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	calls := map[string]func() error{
		"Create": func() error {
			_, err := a.CreateWebhookEndpoint(ctx, &couponv1.CreateWebhookEndpointRequest{})
			return err
		},
		"List": func() error {
			_, err := a.ListWebhookEndpoints(ctx, &couponv1.ListWebhookEndpointsRequest{})
			return err
		},
		"Get": func() error { _, err := a.GetWebhookEndpoint(ctx, &couponv1.GetWebhookEndpointRequest{}); return err },
		"Enable": func() error {
			_, err := a.EnableWebhookEndpoint(ctx, &couponv1.EnableWebhookEndpointRequest{})
			return err
		},
		"Disable": func() error {
			_, err := a.DisableWebhookEndpoint(ctx, &couponv1.DisableWebhookEndpointRequest{})
			return err
		},
		"Delete": func() error {
			_, err := a.DeleteWebhookEndpoint(ctx, &couponv1.DeleteWebhookEndpointRequest{})
			return err
		},
		"Deliveries": func() error {
			_, err := a.ListWebhookDeliveries(ctx, &couponv1.ListWebhookDeliveriesRequest{})
			return err
		},
		"Redeliver": func() error {
			_, err := a.RedeliverWebhookEvent(ctx, &couponv1.RedeliverWebhookEventRequest{})
			return err
		},
	}
	for name, call := range calls {
		if c, reason := code(call()); c != codes.FailedPrecondition || reason != participant.ReasonWebhooksOff {
			t.Errorf("%s with webhooks off: %s %s, want FailedPrecondition WEBHOOKS_OFF", name, c, reason)
		}
	}
}

// TestWebhookReasonsMapToCodes: the webhook store's refusals reach clients
// with the codes of their class.
func TestWebhookReasonsMapToCodes(t *testing.T) {
	for _, tc := range []struct {
		code   participant.Code
		reason string
		want   codes.Code
	}{
		{participant.EINVALID, webhook.ReasonInvalidURL, codes.InvalidArgument},
		{participant.EINVALID, webhook.ReasonInsecureURL, codes.InvalidArgument},
		{participant.EINVALID, webhook.ReasonUnknownEventType, codes.InvalidArgument},
		{participant.ENOTFOUND, webhook.ReasonEndpointNotFound, codes.NotFound},
		{participant.ENOTFOUND, webhook.ReasonEventNotFound, codes.NotFound},
		{participant.EREFUSED, webhook.ReasonEventNotSubscribed, codes.FailedPrecondition},
	} {
		if c, reason := code(participant.Errorf(tc.code, tc.reason, "x")); c != tc.want || reason != tc.reason {
			t.Errorf("%s: %s %s, want %s", tc.reason, c, reason, tc.want)
		}
		if _, ok := couponv1.ErrorReason_value[tc.reason]; !ok {
			t.Errorf("%s is not in the ErrorReason enum of types.proto", tc.reason)
		}
	}
	if _, ok := couponv1.ErrorReason_value[participant.ReasonWebhooksOff]; !ok {
		t.Errorf("%s is not in the ErrorReason enum of types.proto", participant.ReasonWebhooksOff)
	}
}

func TestListWebhookDeliveriesPages(t *testing.T) {
	f := &fakeHooks{}
	for id := int64(7); id >= 1; id-- {
		f.deliveries = append(f.deliveries, webhook.Delivery{ID: id, EndpointID: 1, EventID: "C.1"})
	}
	a := rpc.NewAdmin(nil, f, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	var pages [][]int64
	req := &couponv1.ListWebhookDeliveriesRequest{EndpointId: 1, PageSize: 3}
	for range 5 {
		res, err := a.ListWebhookDeliveries(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, d := range res.Deliveries {
			ids = append(ids, d.Id)
		}
		pages = append(pages, ids)
		if res.NextPageToken == "" {
			break
		}
		req.PageToken = res.NextPageToken
	}
	if diff := cmp.Diff([][]int64{{7, 6, 5}, {4, 3, 2}, {1}}, pages); diff != "" {
		t.Errorf("pages of 3 (-want +got):\n%s", diff)
	}
	for _, bad := range []*couponv1.ListWebhookDeliveriesRequest{
		{EndpointId: 1, PageSize: 501}, {EndpointId: 1, PageSize: -1}, {EndpointId: 1, PageToken: "x"}, {EndpointId: 1, PageToken: "-4"},
	} {
		if _, err := a.ListWebhookDeliveries(ctx, bad); err == nil {
			t.Errorf("ListWebhookDeliveries(%v) = nil error, want INVALID_ARGUMENT", bad)
		} else if c, _ := code(err); c != codes.InvalidArgument {
			t.Errorf("ListWebhookDeliveries(%v) = %s, want InvalidArgument", bad, c)
		}
	}
}

// TestCreateWebhookEndpointActor: without an authenticated caller
// created_by names the actor and is required; with one it must be empty or
// the caller, who is the actor.
func TestCreateWebhookEndpointActor(t *testing.T) {
	f := &fakeHooks{}
	a := rpc.NewAdmin(nil, f, slog.New(slog.DiscardHandler))
	req := func(by string) *couponv1.CreateWebhookEndpointRequest {
		return &couponv1.CreateWebhookEndpointRequest{Url: "https://example.com/hook", CreatedBy: by}
	}
	if _, err := a.CreateWebhookEndpoint(context.Background(), req("")); err == nil {
		t.Error("no caller and no created_by: accepted")
	}
	if res, err := a.CreateWebhookEndpoint(context.Background(), req("ops")); err != nil || res.Secret != "whsec_x" || res.Endpoint.CreatedBy != "ops" {
		t.Errorf("created_by ops without a caller = %v, %v", res, err)
	}
	alice := participant.WithCaller(context.Background(), participant.Caller{Identity: "alice", Method: "/coupon.v1.AdminService/CreateWebhookEndpoint"})
	if _, err := a.CreateWebhookEndpoint(alice, req("bob")); err == nil {
		t.Error("alice creating as bob: accepted")
	} else if c, reason := code(err); c != codes.PermissionDenied || reason != participant.ReasonIdentityMismatch {
		t.Errorf("alice creating as bob: %s %s, want PermissionDenied IDENTITY_MISMATCH", c, reason)
	}
	if _, err := a.CreateWebhookEndpoint(alice, req("")); err != nil {
		t.Fatal(err)
	}
	want := []participant.Actor{
		{Identity: "ops", Method: "CreateWebhookEndpoint"},
		{Identity: "alice", Method: "/coupon.v1.AdminService/CreateWebhookEndpoint"},
	}
	if diff := cmp.Diff(want, f.actors); diff != "" {
		t.Errorf("actors (-want +got):\n%s", diff)
	}
}
