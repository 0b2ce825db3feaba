package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/natstest"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/internal/webhook"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// hooks is a webhook receiver on loopback: it keeps every request's event
// id, signature and body, and answers 204.
type hooks struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []hookRequest
}

type hookRequest struct {
	id, sig string
	body    []byte
}

func newHooks(t *testing.T) *hooks {
	t.Helper()
	h := &hooks{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.reqs = append(h.reqs, hookRequest{id: r.Header.Get(webhook.HeaderEventID), sig: r.Header.Get(webhook.HeaderSignature), body: body})
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hooks) of(id string) []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookRequest
	for _, r := range h.reqs {
		if r.id == id {
			out = append(out, r)
		}
	}
	return out
}

// activeTemplate has alice create a template and bob approve it.
func activeTemplate(t *testing.T, srv *coupontest.Server) *couponv1.CouponTemplate {
	t.Helper()
	ctx, now := t.Context(), time.Now()
	camp, err := srv.Admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "hooks", StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := srv.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: camp.Id, Name: "hooks", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 100,
		MinOrderAmount: 5000, TotalStock: 10, PerUserLimit: 10,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if tpl, err = srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.Version}); err != nil {
		t.Fatalf("bob approves: %v", err)
	}
	return tpl
}

var secretShown = regexp.MustCompile(`data-testid="secret">(whsec_[A-Za-z0-9_-]+)<`)

// TestWebhooksPage: alice registers an endpoint on the Webhooks page and
// sees its secret once; a claimed coupon's event arrives signed with that
// secret and shows in the endpoint's deliveries, from where she sends it
// again; she disables, enables and deletes the endpoint. Every form without
// the session's CSRF token is refused and changes nothing.
func TestWebhooksPage(t *testing.T) {
	ns := natstest.Start(t)
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Events = relay.Config{URL: ns.URL, Poll: 10 * time.Millisecond}
		c.Webhooks = app.Webhooks{Enabled: true, Refresh: 200 * time.Millisecond}
	})
	c, err := console.New(console.Config{}, console.Deps{Admin: srv.Admin, Coupons: srv.Coupons})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c)
	t.Cleanup(ts.Close)
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	_, page := get(t, cl, ts.URL+"/console/signin")
	if resp, _ := post(t, cl, ts.URL+"/console/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {coupontest.TokenAlice}, "name": {"alice"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice signs in: http %d", resp.StatusCode)
	}
	hk := newHooks(t)
	hookURL := hk.URL + "/hook"
	endpoints := func() []*couponv1.WebhookEndpoint {
		t.Helper()
		res, err := srv.Admin.ListWebhookEndpoints(t.Context(), &couponv1.ListWebhookEndpointsRequest{})
		if err != nil {
			t.Fatalf("ListWebhookEndpoints: %v", err)
		}
		return res.Endpoints
	}

	resp, page := get(t, cl, ts.URL+"/console/webhooks")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-testid="no-webhooks"`) || !strings.Contains(page, `href="/console/webhooks" class="here"`) {
		t.Fatalf("the empty Webhooks page: http %d\n%s", resp.StatusCode, page)
	}
	csrf := csrfOf(t, page)

	for _, form := range []url.Values{{"url": {hookURL}}, {"url": {hookURL}, "csrf": {"forged"}}} {
		if resp, _ := post(t, cl, ts.URL+"/console/webhooks", form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("create with csrf %q: http %d, want 403", form.Get("csrf"), resp.StatusCode)
		}
	}
	if eps := endpoints(); len(eps) != 0 {
		t.Fatalf("forms without the CSRF token created %d endpoints", len(eps))
	}

	resp, page = post(t, cl, ts.URL+"/console/webhooks", url.Values{"csrf": {csrf}, "url": {"http://example.com/hook"}, "event_types": {"coupon.claimed"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, `data-reason="INSECURE_WEBHOOK_URL"`) ||
		!strings.Contains(page, `value="http://example.com/hook"`) || !strings.Contains(page, `value="coupon.claimed" checked`) {
		t.Fatalf("plain http to another host: http %d, want 400 INSECURE_WEBHOOK_URL with the form as typed\n%s", resp.StatusCode, page)
	}

	resp, page = post(t, cl, ts.URL+"/console/webhooks", url.Values{"csrf": {csrf}, "url": {hookURL}, "event_types": {"coupon.claimed"}})
	m := secretShown.FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/webhooks" || m == nil || !strings.Contains(page, "created for "+hookURL) {
		t.Fatalf("create: http %d at %s, want the Webhooks page with the secret and the flash\n%s", resp.StatusCode, resp.Request.URL.Path, page)
	}
	secret := m[1]
	if _, again := get(t, cl, ts.URL+"/console/webhooks"); strings.Contains(again, secret) || strings.Contains(again, `data-testid="secret"`) {
		t.Error("the secret is shown again on the next visit")
	}
	eps := endpoints()
	if len(eps) != 1 || eps[0].Url != hookURL || eps[0].CreatedBy != "alice" {
		t.Fatalf("endpoints after the create: %v", eps)
	}
	id := strconv.FormatInt(eps[0].Id, 10)

	tpl := activeTemplate(t, srv)
	cp, err := srv.Coupons.ClaimCoupon(t.Context(), &couponv1.ClaimCouponRequest{RequestId: "hooks-1", UserId: 42, TemplateId: tpl.Id})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	eventID := cp.Code + ".1"
	testenv.Eventually(t, 30*time.Second, "the claim's event at the receiver", func() bool { return len(hk.of(eventID)) == 1 })
	if r := hk.of(eventID)[0]; webhook.Verify(secret, r.sig, r.body, time.Now(), time.Minute) != nil {
		t.Errorf("the delivery does not verify with the secret the page showed")
	}
	row := regexp.MustCompile(`<tr data-event="` + regexp.QuoteMeta(eventID) + `">[\s\S]*?data-testid="delivery-status">204 delivered<`)
	testenv.Eventually(t, 10*time.Second, "the delivery on the page", func() bool {
		_, page = get(t, cl, ts.URL+"/console/webhooks")
		return row.MatchString(page)
	})
	if !strings.Contains(page, `data-testid="webhook-url">`+hookURL+`<`) || !strings.Contains(page, `data-testid="webhook-status">ENABLED<`) {
		t.Errorf("the endpoint is not listed with its URL and status:\n%s", page)
	}

	if resp, _ := post(t, cl, ts.URL+"/console/webhooks/"+id+"/redeliver", url.Values{"event_id": {eventID}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("redeliver without the CSRF token: http %d, want 403", resp.StatusCode)
	}
	_, page = post(t, cl, ts.URL+"/console/webhooks/"+id+"/redeliver", url.Values{"csrf": {csrf}, "event_id": {eventID}})
	if !strings.Contains(page, "Event "+eventID+" sent again to endpoint "+id+": delivered (HTTP 204") {
		t.Errorf("redeliver: no flash of the delivered attempt\n%s", page)
	}
	if n := len(hk.of(eventID)); n != 2 {
		t.Errorf("the receiver got %s %d times, want twice (the CSRF-less form sent nothing)", eventID, n)
	}
	_, page = post(t, cl, ts.URL+"/console/webhooks/"+id+"/redeliver", url.Values{"csrf": {csrf}, "event_id": {"NOPE.1"}})
	if !strings.Contains(page, `data-reason="WEBHOOK_EVENT_NOT_FOUND"`) {
		t.Errorf("redelivering an unknown event: want WEBHOOK_EVENT_NOT_FOUND\n%s", page)
	}

	if resp, _ := post(t, cl, ts.URL+"/console/webhooks/"+id+"/status", url.Values{"status": {"DISABLED"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("disable without the CSRF token: http %d, want 403", resp.StatusCode)
	}
	_, page = post(t, cl, ts.URL+"/console/webhooks/"+id+"/status", url.Values{"csrf": {csrf}, "status": {"DISABLED"}, "reason": {"receiver moving"}})
	if !strings.Contains(page, `data-testid="webhook-status">DISABLED<`) || !strings.Contains(page, `data-testid="webhook-disabled-reason">receiver moving<`) {
		t.Errorf("after disabling: status and reason not shown\n%s", page)
	}
	_, page = post(t, cl, ts.URL+"/console/webhooks/"+id+"/status", url.Values{"csrf": {csrf}, "status": {"ENABLED"}})
	if !strings.Contains(page, `data-testid="webhook-status">ENABLED<`) || strings.Contains(page, "webhook-disabled-reason") {
		t.Errorf("after enabling: not ENABLED, or a disabled reason is still shown\n%s", page)
	}

	if resp, _ := post(t, cl, ts.URL+"/console/webhooks/"+id+"/delete", url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("delete without the CSRF token: http %d, want 403", resp.StatusCode)
	}
	if len(endpoints()) != 1 {
		t.Fatal("the CSRF-less delete deleted the endpoint")
	}
	_, page = post(t, cl, ts.URL+"/console/webhooks/"+id+"/delete", url.Values{"csrf": {csrf}})
	if !strings.Contains(page, "Webhook endpoint "+id+" deleted") || !strings.Contains(page, `data-testid="no-webhooks"`) || len(endpoints()) != 0 {
		t.Errorf("after deleting: the endpoint is still there\n%s", page)
	}
}

// TestWebhooksPageWithEventsOff: the page says webhooks are off.
func TestWebhooksPageWithEventsOff(t *testing.T) {
	ts, cl := startConsole(t)
	_, page := get(t, cl, ts.URL+"/console/signin")
	if resp, _ := post(t, cl, ts.URL+"/console/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {coupontest.TokenAlice}, "name": {"alice"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice signs in: http %d", resp.StatusCode)
	}
	resp, page := get(t, cl, ts.URL+"/console/webhooks")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, `data-reason="WEBHOOKS_OFF"`) || !strings.Contains(page, "Webhooks are off") {
		t.Errorf("Webhooks page with events off: http %d, want 400 with WEBHOOKS_OFF\n%s", resp.StatusCode, page)
	}
}
