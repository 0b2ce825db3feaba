package console

import (
	"fmt"
	"net/http"
	"strings"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

type campaignsData struct {
	Status    string
	Statuses  []string
	Campaigns []*couponv1.Campaign
	Next      string
	Form      campaignForm
}

var campaignStatuses = []string{"ACTIVE", "PAUSED", "ENDED"}

func (c *Console) campaigns(w http.ResponseWriter, r *http.Request, ss *session) {
	c.campaignsPage(w, r, ss, campaignForm{RequestID: randomToken()[:22]}, nil)
}

func (c *Console) campaignsPage(w http.ResponseWriter, r *http.Request, ss *session, form campaignForm, p *problem) {
	ctx, cancel := c.call(r, ss)
	defer cancel()
	q := r.URL.Query()
	d := campaignsData{Status: q.Get("status"), Statuses: campaignStatuses, Form: form}
	res, err := c.d.Admin.ListCampaigns(ctx, &couponv1.ListCampaignsRequest{
		PageSize: 50, PageToken: q.Get("page_token"),
		Status: couponv1.Campaign_Status(couponv1.Campaign_Status_value[d.Status]),
	})
	if err != nil && p == nil {
		p = describe(err)
	}
	if res != nil {
		d.Campaigns, d.Next = res.Campaigns, res.NextPageToken
	}
	c.render(w, r, ss, "campaigns", view{Title: "Campaigns", Nav: "campaigns", Problem: p, Data: d})
}

func (c *Console) createCampaign(w http.ResponseWriter, r *http.Request, ss *session) {
	f := readCampaignForm(r)
	start, end, p := f.times()
	if p != nil {
		c.campaignsPage(w, r, ss, f, p)
		return
	}
	ctx, cancel := c.call(r, ss)
	defer cancel()
	camp, err := c.d.Admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		RequestId: strings.TrimSpace(f.RequestID), Name: f.Name, Description: f.Description, CampaignType: f.Type,
		StartTime: start, EndTime: end, CreatedBy: ss.identity,
	})
	if err != nil {
		c.campaignsPage(w, r, ss, f, describe(err))
		return
	}
	c.done(w, r, ss, fmt.Sprintf("/console/campaigns/%d", camp.Id), fmt.Sprintf("Campaign %d %q created.", camp.Id, camp.Name))
}

type campaignData struct {
	Campaign  *couponv1.Campaign
	Form      campaignForm
	Templates []*couponv1.CouponTemplate
}

func (c *Console) campaign(w http.ResponseWriter, r *http.Request, ss *session) {
	c.campaignPage(w, r, ss, nil, nil)
}

// campaignPage shows a campaign with its templates; form, when not nil, is
// an edit refused by the service, shown again as typed.
func (c *Console) campaignPage(w http.ResponseWriter, r *http.Request, ss *session, form *campaignForm, p *problem) {
	id, perr := pathID(r)
	if perr != nil {
		c.render(w, r, ss, "campaign", view{Title: "Campaign", Nav: "campaigns", Problem: perr})
		return
	}
	ctx, cancel := c.call(r, ss)
	defer cancel()
	camp, err := c.d.Admin.GetCampaign(ctx, &couponv1.GetCampaignRequest{CampaignId: id})
	if err != nil {
		c.render(w, r, ss, "campaign", view{Title: "Campaign", Nav: "campaigns", Problem: describe(err)})
		return
	}
	d := campaignData{Campaign: camp, Form: campaignFormOf(camp)}
	if form != nil {
		d.Form = *form
	}
	res, err := c.d.Admin.ListTemplates(ctx, &couponv1.ListTemplatesRequest{CampaignId: id, PageSize: 100})
	if err != nil && p == nil {
		p = describe(err)
	}
	if res != nil {
		d.Templates = res.Templates
	}
	c.render(w, r, ss, "campaign", view{Title: camp.Name, Nav: "campaigns", Problem: p, Data: d})
}

func (c *Console) updateCampaign(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	f := readCampaignForm(r)
	if p == nil {
		var req *couponv1.UpdateCampaignRequest
		if req, p = f.updateRequest(id, ss.identity); p == nil {
			ctx, cancel := c.call(r, ss)
			defer cancel()
			if _, err := c.d.Admin.UpdateCampaign(ctx, req); err != nil {
				p = describe(err)
			}
		}
	}
	if p != nil {
		c.campaignPage(w, r, ss, &f, p)
		return
	}
	c.done(w, r, ss, fmt.Sprintf("/console/campaigns/%d", id), "Campaign saved.")
}

func (f campaignForm) updateRequest(id int64, identity string) (*couponv1.UpdateCampaignRequest, *problem) {
	start, end, p := f.times()
	if p != nil {
		return nil, p
	}
	return &couponv1.UpdateCampaignRequest{
		CampaignId: id, Name: &f.Name, Description: &f.Description, CampaignType: &f.Type,
		StartTime: start, EndTime: end, UpdatedBy: identity,
	}, nil
}

func (c *Console) campaignStatus(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	st := couponv1.Campaign_Status(couponv1.Campaign_Status_value[r.PostFormValue("status")])
	if p == nil && st == couponv1.Campaign_STATUS_UNSPECIFIED {
		p = invalid("status", "must be ACTIVE, PAUSED or ENDED")
	}
	if p == nil {
		ctx, cancel := c.call(r, ss)
		defer cancel()
		if _, err := c.d.Admin.UpdateCampaign(ctx, &couponv1.UpdateCampaignRequest{CampaignId: id, Status: st, UpdatedBy: ss.identity}); err != nil {
			p = describe(err)
		}
	}
	if p != nil {
		c.campaignPage(w, r, ss, nil, p)
		return
	}
	c.done(w, r, ss, fmt.Sprintf("/console/campaigns/%d", id), "Campaign is now "+st.String()+".")
}
