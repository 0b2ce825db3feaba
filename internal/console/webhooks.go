package console

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/opencoupon/coupon/internal/webhook"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// recentDeliveries is how many of each endpoint's latest attempts the
// page shows.
const recentDeliveries = 10

type webhooksData struct {
	Endpoints []webhookView
	// Types are the event types an endpoint may subscribe to.
	Types []string
	Form  webhookForm
	// Created is the endpoint just created, with its secret, shown once.
	Created *createdEndpoint
}

// webhookView is an endpoint with its latest attempts.
type webhookView struct {
	*couponv1.WebhookEndpoint
	Deliveries []*couponv1.WebhookDelivery
	// More is true when it has older attempts than those shown.
	More bool
}

// createdEndpoint is what the page shows once after a creation.
type createdEndpoint struct {
	ID     int64
	URL    string
	Secret string
}

// webhookForm is the new-endpoint form as typed.
type webhookForm struct {
	URL   string
	Types []string
}

// Checked reports whether the form ticked event type t.
func (f webhookForm) Checked(t string) bool { return slices.Contains(f.Types, t) }

func readWebhookForm(r *http.Request) webhookForm {
	_ = r.ParseForm() // a no-op when the CSRF check read the form already
	return webhookForm{URL: strings.TrimSpace(r.PostFormValue("url")), Types: r.PostForm["event_types"]}
}

func (c *Console) webhooks(w http.ResponseWriter, r *http.Request, ss *session) {
	c.webhooksPage(w, r, ss, webhookForm{}, nil)
}

// webhooksPage lists the endpoints with their latest attempts; form, when
// a creation was refused, is shown again as typed.
func (c *Console) webhooksPage(w http.ResponseWriter, r *http.Request, ss *session, form webhookForm, p *problem) {
	d := webhooksData{Types: webhook.EventTypes(), Form: form, Created: c.sessions.takeCreated(ss)}
	ctx, cancel := c.call(r, ss)
	defer cancel()
	res, err := c.d.Admin.ListWebhookEndpoints(ctx, &couponv1.ListWebhookEndpointsRequest{})
	if err != nil && p == nil {
		p = describe(err)
	}
	for _, ep := range res.GetEndpoints() {
		v := webhookView{WebhookEndpoint: ep}
		dels, err := c.d.Admin.ListWebhookDeliveries(ctx, &couponv1.ListWebhookDeliveriesRequest{EndpointId: ep.Id, PageSize: recentDeliveries})
		if err != nil {
			if p == nil {
				p = describe(err)
			}
		} else {
			v.Deliveries, v.More = dels.Deliveries, dels.NextPageToken != ""
		}
		d.Endpoints = append(d.Endpoints, v)
	}
	c.render(w, r, ss, "webhooks", view{Title: "Webhooks", Nav: "webhooks", Problem: p, Data: d})
}

func (c *Console) createWebhook(w http.ResponseWriter, r *http.Request, ss *session) {
	f := readWebhookForm(r)
	ctx, cancel := c.call(r, ss)
	defer cancel()
	res, err := c.d.Admin.CreateWebhookEndpoint(ctx, &couponv1.CreateWebhookEndpointRequest{
		Url: f.URL, EventTypes: f.Types, CreatedBy: ss.identity,
	})
	if err != nil {
		c.webhooksPage(w, r, ss, f, describe(err))
		return
	}
	// The secret waits in the session for the next page, which shows it
	// once: a reload neither shows it again nor creates another endpoint.
	c.sessions.setCreated(ss, &createdEndpoint{ID: res.Endpoint.Id, URL: res.Endpoint.Url, Secret: res.Secret})
	c.done(w, r, ss, "/console/webhooks", fmt.Sprintf("Webhook endpoint %d created for %s.", res.Endpoint.Id, res.Endpoint.Url))
}

// webhookStatus enables or disables an endpoint.
func (c *Console) webhookStatus(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	var ep *couponv1.WebhookEndpoint
	if p == nil {
		ctx, cancel := c.call(r, ss)
		defer cancel()
		var err error
		switch r.PostFormValue("status") {
		case "ENABLED":
			ep, err = c.d.Admin.EnableWebhookEndpoint(ctx, &couponv1.EnableWebhookEndpointRequest{EndpointId: id, UpdatedBy: ss.identity})
		case "DISABLED":
			ep, err = c.d.Admin.DisableWebhookEndpoint(ctx, &couponv1.DisableWebhookEndpointRequest{
				EndpointId: id, Reason: r.PostFormValue("reason"), UpdatedBy: ss.identity,
			})
		default:
			p = invalid("status", "must be ENABLED or DISABLED")
		}
		if err != nil {
			p = describe(err)
		}
	}
	if p != nil {
		c.webhooksPage(w, r, ss, webhookForm{}, p)
		return
	}
	c.done(w, r, ss, "/console/webhooks", fmt.Sprintf("Webhook endpoint %d is now %s.", ep.Id, ep.Status))
}

func (c *Console) deleteWebhook(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	if p == nil {
		ctx, cancel := c.call(r, ss)
		defer cancel()
		if _, err := c.d.Admin.DeleteWebhookEndpoint(ctx, &couponv1.DeleteWebhookEndpointRequest{EndpointId: id, UpdatedBy: ss.identity}); err != nil {
			p = describe(err)
		}
	}
	if p != nil {
		c.webhooksPage(w, r, ss, webhookForm{}, p)
		return
	}
	c.done(w, r, ss, "/console/webhooks", fmt.Sprintf("Webhook endpoint %d deleted; its delivery history stays.", id))
}

// redeliverWebhook sends an event to an endpoint once more. A failed
// attempt is recorded like any other and told in the flash.
func (c *Console) redeliverWebhook(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	var d *couponv1.WebhookDelivery
	if p == nil {
		ctx, cancel := c.call(r, ss)
		defer cancel()
		var err error
		d, err = c.d.Admin.RedeliverWebhookEvent(ctx, &couponv1.RedeliverWebhookEventRequest{
			EndpointId: id, EventId: r.PostFormValue("event_id"), Operator: ss.identity,
		})
		if err != nil {
			p = describe(err)
		}
	}
	if p != nil {
		c.webhooksPage(w, r, ss, webhookForm{}, p)
		return
	}
	outcome := fmt.Sprintf("delivered (HTTP %d in %d ms)", d.StatusCode, d.LatencyMs)
	if !d.Delivered {
		outcome = "not delivered: " + d.Error
	}
	c.done(w, r, ss, "/console/webhooks", fmt.Sprintf("Event %s sent again to endpoint %d: %s.", d.EventId, id, outcome))
}
