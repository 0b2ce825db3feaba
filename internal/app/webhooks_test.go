package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/natstest"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/internal/webhook"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// hook is one request a webhook receiver got.
type hook struct {
	id, typ, sig string
	body         []byte
}

// receiver is a webhook endpoint on loopback that answers 204 to all.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []hook
	seen chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{seen: make(chan struct{}, 100)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.got = append(rc.got, hook{id: r.Header.Get(webhook.HeaderEventID), typ: r.Header.Get(webhook.HeaderEventType),
			sig: r.Header.Get(webhook.HeaderSignature), body: body})
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// of returns the requests that carried event id.
func (rc *receiver) of(id string) []hook {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []hook
	for _, h := range rc.got {
		if h.id == id {
			out = append(out, h)
		}
	}
	return out
}

// TestWebhooksEndToEnd registers an endpoint through the admin API, claims
// a coupon and sees the signed coupon.claimed event arrive; then lists,
// redelivers, disables, enables and deletes it through the API, each
// change audit-logged without the secret, and only admins may.
func TestWebhooksEndToEnd(t *testing.T) {
	ns := natstest.Start(t)
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Events = relay.Config{URL: ns.URL, Poll: 10 * time.Millisecond}
		c.Webhooks = app.Webhooks{Enabled: true, Refresh: 200 * time.Millisecond}
	})
	rc := newReceiver(t) // http to loopback: accepted without webhooks.allow_http
	ctx := ctxT(t)

	_, err := srv.AdminAs(coupontest.TokenApp).CreateWebhookEndpoint(ctx, &couponv1.CreateWebhookEndpointRequest{Url: rc.URL})
	wantRefused(t, "CreateWebhookEndpoint as app", err, codes.PermissionDenied, "PERMISSION_DENIED")
	_, err = srv.AdminAs(coupontest.TokenShop).ListWebhookEndpoints(ctx, &couponv1.ListWebhookEndpointsRequest{})
	wantRefused(t, "ListWebhookEndpoints as shop", err, codes.PermissionDenied, "PERMISSION_DENIED")
	for _, tc := range []struct {
		what   string
		req    *couponv1.CreateWebhookEndpointRequest
		code   codes.Code
		reason string
	}{
		{"an ftp URL", &couponv1.CreateWebhookEndpointRequest{Url: "ftp://example.com/hook"}, codes.InvalidArgument, webhook.ReasonInvalidURL},
		{"plain http to another host", &couponv1.CreateWebhookEndpointRequest{Url: "http://example.com/hook"}, codes.InvalidArgument, webhook.ReasonInsecureURL},
		{"an unknown event type", &couponv1.CreateWebhookEndpointRequest{Url: rc.URL, EventTypes: []string{"coupon.stolen"}}, codes.InvalidArgument, webhook.ReasonUnknownEventType},
		{"someone else as creator", &couponv1.CreateWebhookEndpointRequest{Url: rc.URL, CreatedBy: "bob"}, codes.PermissionDenied, "IDENTITY_MISMATCH"},
	} {
		_, err := srv.Admin.CreateWebhookEndpoint(ctx, tc.req)
		wantRefused(t, "CreateWebhookEndpoint with "+tc.what, err, tc.code, tc.reason)
	}

	created, err := srv.Admin.CreateWebhookEndpoint(ctx, &couponv1.CreateWebhookEndpointRequest{
		Url: rc.URL + "/hook", EventTypes: []string{"coupon.claimed"}})
	if err != nil {
		t.Fatalf("CreateWebhookEndpoint as alice: %v", err)
	}
	ep, secret := created.Endpoint, created.Secret
	if !strings.HasPrefix(secret, webhook.SecretPrefix) || ep.Status != couponv1.WebhookEndpoint_ENABLED || ep.CreatedBy != "alice" {
		t.Fatalf("created %v with secret %q; want ENABLED, by alice, with a whsec_ secret", ep, secret)
	}
	list, err := srv.Admin.ListWebhookEndpoints(ctx, &couponv1.ListWebhookEndpointsRequest{})
	if err != nil || len(list.Endpoints) != 1 || list.Endpoints[0].Url != rc.URL+"/hook" || list.Endpoints[0].EventTypes[0] != "coupon.claimed" {
		t.Fatalf("ListWebhookEndpoints = %v, %v; want the endpoint", list, err)
	}

	tpl := template(t, srv, 10)
	c := claim(t, srv, tpl.Id, 7)
	eventID := c.Code + ".1"
	testenv.Eventually(t, 30*time.Second, "the coupon.claimed event at the receiver", func() bool { return len(rc.of(eventID)) > 0 })
	got := rc.of(eventID)[0]
	if err := webhook.Verify(secret, got.sig, got.body, time.Now(), time.Minute); err != nil {
		t.Errorf("Verify(the delivery) = %v", err)
	}
	var body map[string]any
	if err := json.Unmarshal(got.body, &body); err != nil || got.typ != "coupon.claimed" || body["coupon_code"] != c.Code || body["type"] != "coupon.claimed" {
		t.Errorf("delivery: type %q, body %s (%v); want coupon.claimed of %s", got.typ, got.body, err, c.Code)
	}

	var dels []*couponv1.WebhookDelivery
	testenv.Eventually(t, 10*time.Second, "the delivery recorded", func() bool {
		res, err := srv.Admin.ListWebhookDeliveries(ctx, &couponv1.ListWebhookDeliveriesRequest{EndpointId: ep.Id})
		if err != nil {
			t.Fatalf("ListWebhookDeliveries: %v", err)
		}
		dels = res.Deliveries
		return len(dels) > 0
	})
	if d := dels[0]; d.EventId != eventID || !d.Delivered || d.StatusCode != http.StatusNoContent || d.Manual {
		t.Errorf("delivery %v; want %s delivered with 204", d, eventID)
	}

	again, err := srv.Admin.RedeliverWebhookEvent(ctx, &couponv1.RedeliverWebhookEventRequest{EndpointId: ep.Id, EventId: eventID})
	if err != nil || !again.Delivered || !again.Manual || again.EventId != eventID {
		t.Fatalf("RedeliverWebhookEvent = %v, %v; want a delivered manual attempt", again, err)
	}
	if n := len(rc.of(eventID)); n != 2 {
		t.Errorf("the receiver got %s %d times, want twice", eventID, n)
	}
	_, err = srv.Admin.RedeliverWebhookEvent(ctx, &couponv1.RedeliverWebhookEventRequest{EndpointId: ep.Id, EventId: "NOPE.1"})
	wantRefused(t, "RedeliverWebhookEvent of an event never sent", err, codes.NotFound, webhook.ReasonEventNotFound)
	_, err = srv.AdminAs(coupontest.TokenApp).RedeliverWebhookEvent(ctx, &couponv1.RedeliverWebhookEventRequest{EndpointId: ep.Id, EventId: eventID})
	wantRefused(t, "RedeliverWebhookEvent as app", err, codes.PermissionDenied, "PERMISSION_DENIED")

	off, err := srv.Admin.DisableWebhookEndpoint(ctx, &couponv1.DisableWebhookEndpointRequest{EndpointId: ep.Id, Reason: "receiver moving"})
	if err != nil || off.Status != couponv1.WebhookEndpoint_DISABLED || off.DisabledReason != "receiver moving" {
		t.Fatalf("DisableWebhookEndpoint = %v, %v", off, err)
	}
	on, err := srv.Admin.EnableWebhookEndpoint(coupontest.AsToken(ctx, coupontest.TokenBob), &couponv1.EnableWebhookEndpointRequest{EndpointId: ep.Id})
	if err != nil || on.Status != couponv1.WebhookEndpoint_ENABLED || on.DisabledReason != "" {
		t.Fatalf("EnableWebhookEndpoint as bob = %v, %v", on, err)
	}
	if _, err := srv.Admin.DeleteWebhookEndpoint(ctx, &couponv1.DeleteWebhookEndpointRequest{EndpointId: ep.Id}); err != nil {
		t.Fatalf("DeleteWebhookEndpoint: %v", err)
	}
	_, err = srv.Admin.GetWebhookEndpoint(ctx, &couponv1.GetWebhookEndpointRequest{EndpointId: ep.Id})
	wantRefused(t, "GetWebhookEndpoint after the delete", err, codes.NotFound, webhook.ReasonEndpointNotFound)
	_, err = srv.Admin.EnableWebhookEndpoint(ctx, &couponv1.EnableWebhookEndpointRequest{EndpointId: ep.Id})
	wantRefused(t, "EnableWebhookEndpoint after the delete", err, codes.NotFound, webhook.ReasonEndpointNotFound)
	if res, err := srv.Admin.ListWebhookDeliveries(ctx, &couponv1.ListWebhookDeliveriesRequest{EndpointId: ep.Id, PageSize: 1}); err != nil ||
		len(res.Deliveries) != 1 || !res.Deliveries[0].Manual || res.NextPageToken == "" {
		t.Errorf("ListWebhookDeliveries of the deleted endpoint, pages of 1 = %v, %v; want the redelivery and a next page", res, err)
	}

	audit, err := srv.Admin.ListAuditLog(ctx, &couponv1.ListAuditLogRequest{EntityType: "webhook_endpoint", EntityId: ep.Id})
	if err != nil {
		t.Fatalf("ListAuditLog: %v", err)
	}
	var methods []string
	for _, e := range audit.Entries {
		methods = append(methods, e.Identity+" "+strings.TrimPrefix(e.Method, "/coupon.v1.AdminService/"))
		if strings.Contains(e.BeforeJson+e.AfterJson, secret) || strings.Contains(e.BeforeJson+e.AfterJson, webhook.SecretPrefix) {
			t.Errorf("audit row %d holds the secret: %s / %s", e.Id, e.BeforeJson, e.AfterJson)
		}
	}
	want := "alice DeleteWebhookEndpoint,bob EnableWebhookEndpoint,alice DisableWebhookEndpoint,alice RedeliverWebhookEvent,alice CreateWebhookEndpoint"
	if got := strings.Join(methods, ","); got != want {
		t.Errorf("audit log of the endpoint, newest first:\n got %s\nwant %s", got, want)
	}
}

// TestWebhooksOff: without events the webhook calls answer WEBHOOKS_OFF.
func TestWebhooksOff(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) { c.Webhooks.Enabled = true })
	ctx := ctxT(t)
	_, err := srv.Admin.CreateWebhookEndpoint(ctx, &couponv1.CreateWebhookEndpointRequest{Url: "https://example.com/hook"})
	wantRefused(t, "CreateWebhookEndpoint with events off", err, codes.FailedPrecondition, "WEBHOOKS_OFF")
	_, err = srv.Admin.ListWebhookEndpoints(ctx, &couponv1.ListWebhookEndpointsRequest{})
	wantRefused(t, "ListWebhookEndpoints with events off", err, codes.FailedPrecondition, "WEBHOOKS_OFF")
	_, err = srv.Admin.RedeliverWebhookEvent(ctx, &couponv1.RedeliverWebhookEventRequest{EndpointId: 1, EventId: "C1.1"})
	wantRefused(t, "RedeliverWebhookEvent with events off", err, codes.FailedPrecondition, "WEBHOOKS_OFF")
}

// TestWebhooksStartBeforeNATS: a service started while NATS is down
// serves the endpoint calls at once, answers a redelivery with
// UNAVAILABLE, and delivers what was claimed meanwhile once NATS is up.
func TestWebhooksStartBeforeNATS(t *testing.T) {
	ns := natstest.Start(t)
	ns.Kill()
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Events = relay.Config{URL: ns.URL, Poll: 10 * time.Millisecond}
		c.Webhooks = app.Webhooks{Enabled: true, Refresh: 200 * time.Millisecond}
	})
	rc := newReceiver(t)
	ctx := ctxT(t)
	created, err := srv.Admin.CreateWebhookEndpoint(ctx, &couponv1.CreateWebhookEndpointRequest{Url: rc.URL + "/hook"})
	if err != nil {
		t.Fatalf("CreateWebhookEndpoint while NATS is down: %v", err)
	}
	_, err = srv.Admin.RedeliverWebhookEvent(ctx, &couponv1.RedeliverWebhookEventRequest{EndpointId: created.Endpoint.Id, EventId: "C1.1"})
	wantRefused(t, "RedeliverWebhookEvent while NATS is down", err, codes.Unavailable, "UNAVAILABLE")
	c := claim(t, srv, template(t, srv, 10).Id, 7)
	ns.Restart()
	testenv.Eventually(t, time.Minute, "the coupon.claimed event at the receiver once NATS is up", func() bool {
		return len(rc.of(c.Code+".1")) > 0
	})
}
