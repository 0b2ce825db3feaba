package console

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

type newTemplateData struct {
	Campaign *couponv1.Campaign
	Form     templateForm
	Types    []string
}

var couponTypes = []string{"FIXED_AMOUNT", "PERCENT_OFF"}

func (c *Console) newTemplate(w http.ResponseWriter, r *http.Request, ss *session) {
	c.newTemplatePage(w, r, ss, templateForm{RequestID: randomToken()[:22], CouponType: "FIXED_AMOUNT", Returnable: true}, nil)
}

func (c *Console) newTemplatePage(w http.ResponseWriter, r *http.Request, ss *session, f templateForm, p *problem) {
	id, perr := pathID(r)
	if perr != nil {
		c.render(w, r, ss, "template_new", view{Title: "New template", Nav: "campaigns", Problem: perr})
		return
	}
	ctx, cancel := c.call(r, ss)
	defer cancel()
	camp, err := c.d.Admin.GetCampaign(ctx, &couponv1.GetCampaignRequest{CampaignId: id})
	if err != nil {
		c.render(w, r, ss, "template_new", view{Title: "New template", Nav: "campaigns", Problem: describe(err)})
		return
	}
	c.render(w, r, ss, "template_new", view{Title: "New template", Nav: "campaigns", Problem: p, Data: newTemplateData{Campaign: camp, Form: f, Types: couponTypes}})
}

func (c *Console) createTemplate(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	f := readTemplateForm(r)
	var tpl *couponv1.CouponTemplate
	if p == nil {
		var req *couponv1.CreateTemplateRequest
		if req, p = f.createRequest(id, ss.identity); p == nil {
			ctx, cancel := c.call(r, ss)
			defer cancel()
			var err error
			if tpl, err = c.d.Admin.CreateTemplate(ctx, req); err != nil {
				p = describe(err)
			}
		}
	}
	if p != nil {
		c.newTemplatePage(w, r, ss, f, p)
		return
	}
	c.done(w, r, ss, fmt.Sprintf("/console/templates/%d", tpl.Id),
		fmt.Sprintf("Template %d %q created; it waits for someone other than you to approve it.", tpl.Id, tpl.Name))
}

// checkData is the live check's answer.
type checkData struct {
	Problem *problem
	// Summary says in words what the template gives, when the check passes.
	Summary string
}

// checkTemplate answers the live check of a template form's money fields
// and usage rule (an htmx fragment).
func (c *Console) checkTemplate(w http.ResponseWriter, r *http.Request, ss *session) {
	rules, p := readTemplateForm(r).rules()
	if p == nil {
		p = rules.check()
	}
	d := checkData{Problem: p}
	if p == nil {
		d.Summary = rules.summary()
	}
	// The fragment is the answer even when the draft is wrong: the check
	// itself worked.
	if p != nil {
		p.HTTP = http.StatusOK
	}
	c.render(w, r, ss, "check", view{Data: d})
}

func (r templateRules) summary() string {
	var b strings.Builder
	switch r.Type {
	case couponv1.CouponTemplate_FIXED_AMOUNT:
		fmt.Fprintf(&b, "%s off", money(r.Discount))
	case couponv1.CouponTemplate_PERCENT_OFF:
		fmt.Fprintf(&b, "%d%% off", r.PercentOff)
		if r.MaxDiscount > 0 {
			fmt.Fprintf(&b, " (at most %s)", money(r.MaxDiscount))
		}
	}
	if r.MinOrder > 0 {
		fmt.Fprintf(&b, " orders of at least %s", money(r.MinOrder))
	} else {
		b.WriteString(" any order")
	}
	if len(r.ProductLines) > 0 {
		fmt.Fprintf(&b, " in %s", strings.Join(r.ProductLines, ", "))
	}
	if strings.TrimSpace(r.UsageRule) != "" {
		b.WriteString(" where the usage rule holds")
	}
	return "Valid: " + b.String() + "."
}

type templatesData struct {
	Status    string
	Statuses  []string
	Templates []*couponv1.CouponTemplate
	Next      string
}

var templateStatuses = []string{"PENDING_APPROVAL", "ACTIVE", "PAUSED", "ENDED"}

// templates lists templates across campaigns; by default the approval
// queue (PENDING_APPROVAL).
func (c *Console) templates(w http.ResponseWriter, r *http.Request, ss *session) {
	c.templatesPage(w, r, ss, nil)
}

func (c *Console) templatesPage(w http.ResponseWriter, r *http.Request, ss *session, p *problem) {
	q := r.URL.Query()
	d := templatesData{Status: q.Get("status"), Statuses: templateStatuses}
	if !q.Has("status") {
		d.Status = "PENDING_APPROVAL"
	}
	ctx, cancel := c.call(r, ss)
	defer cancel()
	res, err := c.d.Admin.ListTemplates(ctx, &couponv1.ListTemplatesRequest{
		PageSize: 100, PageToken: q.Get("page_token"),
		Status: couponv1.CouponTemplate_Status(couponv1.CouponTemplate_Status_value[d.Status]),
	})
	if err != nil && p == nil {
		p = describe(err)
	}
	if res != nil {
		d.Templates, d.Next = res.Templates, res.NextPageToken
	}
	title := "Templates"
	if d.Status == "PENDING_APPROVAL" {
		title = "Approval queue"
	}
	c.render(w, r, ss, "templates", view{Title: title, Nav: "templates", Problem: p, Data: d})
}

type templateData struct {
	Template *couponv1.CouponTemplate
	Campaign *couponv1.Campaign
	Form     templateForm
	Types    []string
	Stats    *couponv1.TemplateStats
	Chart    []bar
	// StockRequestID prefills the top-up form, so a resubmitted form is
	// applied once.
	StockRequestID string
	StockAmount    string
	Mine           bool
	// Review is shown with the approve button: what changed since creation.
	Review *review
}

func (c *Console) template(w http.ResponseWriter, r *http.Request, ss *session) {
	c.templatePage(w, r, ss, nil, nil)
}

// templatePage shows a template, its stats and its forms; form, when not
// nil, is an edit the service refused, shown again as typed.
func (c *Console) templatePage(w http.ResponseWriter, r *http.Request, ss *session, form *templateForm, p *problem) {
	id, perr := pathID(r)
	if perr != nil {
		c.render(w, r, ss, "template", view{Title: "Template", Nav: "templates", Problem: perr})
		return
	}
	ctx, cancel := c.call(r, ss)
	defer cancel()
	tpl, err := c.d.Admin.GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: id})
	if err != nil {
		c.render(w, r, ss, "template", view{Title: "Template", Nav: "templates", Problem: describe(err)})
		return
	}
	d := templateData{
		Template: tpl, Form: templateFormOf(tpl), Types: couponTypes, Mine: strings.EqualFold(tpl.CreatedBy, ss.identity),
		StockRequestID: randomToken()[:22], StockAmount: r.PostFormValue("amount"),
	}
	if form != nil {
		d.Form = *form
	}
	if r.Method == http.MethodPost && r.URL.Path == fmt.Sprintf("/console/templates/%d/stock", id) {
		// A refused top-up keeps its request id: retrying it is safe.
		d.StockRequestID = r.PostFormValue("request_id")
	}
	if tpl.Status == couponv1.CouponTemplate_PENDING_APPROVAL {
		if d.Review, err = c.reviewOf(ctx, tpl); err != nil && p == nil {
			p = describe(err)
		}
	}
	if camp, err := c.d.Admin.GetCampaign(ctx, &couponv1.GetCampaignRequest{CampaignId: tpl.CampaignId}); err == nil {
		d.Campaign = camp
	}
	if st, err := c.d.Admin.GetTemplateStats(ctx, &couponv1.GetTemplateStatsRequest{TemplateId: id}); err == nil {
		d.Stats, d.Chart = st, statsChart(st)
	} else if p == nil {
		p = describe(err)
	}
	c.render(w, r, ss, "template", view{Title: tpl.Name, Nav: "templates", Problem: p, Data: d})
}

func (c *Console) updateTemplate(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	f := readTemplateForm(r)
	if p == nil {
		ctx, cancel := c.call(r, ss)
		defer cancel()
		cur, err := c.d.Admin.GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: id})
		if err != nil {
			p = describe(err)
		} else {
			var req *couponv1.UpdateTemplateRequest
			if req, p = f.updateRequest(cur, ss.identity); p == nil {
				if _, err := c.d.Admin.UpdateTemplate(ctx, req); err != nil {
					p = describe(err)
				}
			}
		}
	}
	if p != nil {
		c.templatePage(w, r, ss, &f, p)
		return
	}
	c.done(w, r, ss, fmt.Sprintf("/console/templates/%d", id), "Template saved.")
}

// approve approves the version of the template the page showed (the
// form's version): if it changed since, the service refuses with
// TEMPLATE_CHANGED and the page shows it anew.
func (c *Console) approve(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	var version int64
	if p == nil {
		version, p = parseInt("version", r.PostFormValue("version"), 64)
	}
	var tpl *couponv1.CouponTemplate
	if p == nil {
		ctx, cancel := c.call(r, ss)
		defer cancel()
		var err error
		if tpl, err = c.d.Admin.ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: id, Version: version, ApprovedBy: ss.identity}); err != nil {
			p = describe(err)
		}
	}
	back := fmt.Sprintf("/console/templates/%d", id)
	if r.PostFormValue("from") == "queue" {
		back = "/console/templates"
	}
	if p != nil {
		if r.PostFormValue("from") == "queue" {
			c.templatesPage(w, r, ss, p)
		} else {
			c.templatePage(w, r, ss, nil, p)
		}
		return
	}
	c.done(w, r, ss, back, fmt.Sprintf("Template %d %q approved by %s: it is %s.", tpl.Id, tpl.Name, ss.identity, tpl.Status))
}

func (c *Console) addStock(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	reqID := strings.TrimSpace(r.PostFormValue("request_id"))
	var res *couponv1.AddStockResponse
	if p == nil {
		var amount int64
		if amount, p = parseInt("amount", r.PostFormValue("amount"), 64); p == nil {
			ctx, cancel := c.call(r, ss)
			defer cancel()
			var err error
			res, err = c.d.Admin.AddStock(ctx, &couponv1.AddStockRequest{RequestId: reqID, TemplateId: id, Amount: amount, Operator: ss.identity})
			if err != nil {
				p = describe(err)
			}
		}
	}
	if p != nil {
		c.templatePage(w, r, ss, nil, p)
		return
	}
	msg := fmt.Sprintf("Stock topped up under request id %s: total %d, remaining %d.", reqID, res.TotalStock, res.RemainingStock)
	if res.Replayed {
		msg = fmt.Sprintf("Request id %s was applied before; nothing changed now (total %d, remaining %d).", reqID, res.TotalStock, res.RemainingStock)
	}
	c.done(w, r, ss, fmt.Sprintf("/console/templates/%d", id), msg)
}

func (c *Console) templateStatus(w http.ResponseWriter, r *http.Request, ss *session) {
	id, p := pathID(r)
	st := couponv1.CouponTemplate_Status(couponv1.CouponTemplate_Status_value[r.PostFormValue("status")])
	if p == nil && st == couponv1.CouponTemplate_STATUS_UNSPECIFIED {
		p = invalid("status", "must be ACTIVE, PAUSED or ENDED")
	}
	if p == nil {
		ctx, cancel := c.call(r, ss)
		defer cancel()
		if _, err := c.d.Admin.UpdateTemplate(ctx, &couponv1.UpdateTemplateRequest{TemplateId: id, Status: st, UpdatedBy: ss.identity}); err != nil {
			p = describe(err)
		}
	}
	if p != nil {
		c.templatePage(w, r, ss, nil, p)
		return
	}
	c.done(w, r, ss, fmt.Sprintf("/console/templates/%d", id), "Template is now "+st.String()+".")
}

// bar is one bar of the stats chart, laid out for an SVG 600×220.
type bar struct {
	Label      string
	Value      int64
	X, Y, H    int
	LabelX     int
	ValueY     int
	Class      string
	ValueLabel string
}

// statsChart lays the stats out as bars, scaled to the largest.
func statsChart(st *couponv1.TemplateStats) []bar {
	vals := []struct {
		label string
		v     int64
	}{
		{"issued", st.Issued}, {"available", st.Available}, {"locked", st.Locked},
		{"used", st.Used}, {"expired", st.Expired}, {"remaining", st.RemainingStock},
	}
	var top int64 = 1
	for _, v := range vals {
		top = max(top, v.v)
	}
	const height, base, width, gap = 160, 180, 70, 28
	bars := make([]bar, len(vals))
	for i, v := range vals {
		h := int(v.v * height / top)
		if v.v > 0 && h < 2 {
			h = 2
		}
		x := 20 + i*(width+gap)
		bars[i] = bar{
			Label: v.label, Value: v.v, X: x, Y: base - h, H: h, LabelX: x + width/2,
			ValueY: base - h - 6, Class: "bar-" + v.label, ValueLabel: strconv.FormatInt(v.v, 10),
		}
	}
	return bars
}
