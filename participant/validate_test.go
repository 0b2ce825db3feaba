package participant_test

import (
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// wantInvalidField fails unless err is INVALID_ARGUMENT naming field.
func wantInvalidField(t *testing.T, err error, field string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != codes.InvalidArgument {
		t.Fatalf("error = %v, want InvalidArgument naming %s", err, field)
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			if got := ei.Metadata["field"]; got != field {
				t.Fatalf("error names field %q (%v), want %q", got, err, field)
			}
			return
		}
	}
	t.Fatalf("error %v carries no ErrorInfo", err)
}

// catalogSize is how many campaigns and templates (of e's campaign) are stored.
func (e *env) catalogSize(t *testing.T) (campaigns, templates int) {
	t.Helper()
	cs, err := e.srv.Admin.ListCampaigns(ctxT(t), &couponv1.ListCampaignsRequest{PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := e.srv.Admin.ListTemplates(ctxT(t), &couponv1.ListTemplatesRequest{CampaignId: e.campaign, PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	return len(cs.Campaigns), len(ts.Templates)
}

func (e *env) templateRequest(name string) *couponv1.CreateTemplateRequest {
	now := e.clk.Now()
	return &couponv1.CreateTemplateRequest{
		CampaignId: e.campaign, Name: name, CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: 10, CreatedBy: "alice",
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(time.Hour)),
	}
}

// TestNamesRefuseControlCharacters: names, types, product lines and other
// single-line operator text refuse control characters and bidirectional
// overrides and isolates with INVALID_ARGUMENT naming the field, on create
// and on update, and nothing is stored; descriptions keep line breaks and
// tabs but refuse the rest.
func TestNamesRefuseControlCharacters(t *testing.T) {
	e := newEnv(t)
	now := e.clk.Now()
	campaign := func(name, desc, typ string) *couponv1.CreateCampaignRequest {
		return &couponv1.CreateCampaignRequest{
			Name: name, Description: desc, CampaignType: typ, CreatedBy: "alice",
			StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(time.Hour)),
		}
	}
	campaigns, templates := e.catalogSize(t)

	for _, tc := range []struct {
		name  string
		req   *couponv1.CreateCampaignRequest
		field string
	}{
		{"override and NUL", campaign("Spring\u202esale\u0000", "", ""), "name"},
		{"NUL", campaign("Spring\x00", "", ""), "name"},
		{"newline in a name", campaign("Spring\nsale", "", ""), "name"},
		{"tab in a name", campaign("Spring\tsale", "", ""), "name"},
		{"escape", campaign("Spring \x1b[31msale", "", ""), "name"},
		{"DEL", campaign("Spring\x7f", "", ""), "name"},
		{"C1 control", campaign("Spring\u0085", "", ""), "name"},
		{"line separator", campaign("Spring\u2028sale", "", ""), "name"},
		{"left-to-right embedding", campaign("Spring\u202asale", "", ""), "name"},
		{"first strong isolate", campaign("Spring\u2068sale", "", ""), "name"},
		{"pop directional isolate", campaign("Spring\u2069", "", ""), "name"},
		{"type", campaign("Spring", "", "PROMO\u0000"), "campaign_type"},
		{"override in a description", campaign("Spring", "Spring\u202esale", ""), "description"},
		{"NUL in a description", campaign("Spring", "a\x00b", ""), "description"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.srv.Admin.CreateCampaign(ctxT(t), tc.req)
			wantInvalidField(t, err, tc.field)
		})
	}

	tpl := e.templateRequest("Spring\u202e")
	_, err := e.srv.Admin.CreateTemplate(ctxT(t), tpl)
	wantInvalidField(t, err, "name")
	tpl = e.templateRequest("5 off")
	tpl.ProductLines = []string{"shoes\u2066"}
	_, err = e.srv.Admin.CreateTemplate(ctxT(t), tpl)
	wantInvalidField(t, err, "product_lines")
	tpl = e.templateRequest("5 off")
	tpl.Description = "ok\n\x00"
	_, err = e.srv.Admin.CreateTemplate(ctxT(t), tpl)
	wantInvalidField(t, err, "description")

	if c, tp := e.catalogSize(t); c != campaigns || tp != templates {
		t.Fatalf("after refusals: %d campaigns, %d templates; want %d, %d (nothing stored)", c, tp, campaigns, templates)
	}

	// Descriptions keep line breaks and tabs; text in other scripts and
	// the implicit direction marks pass.
	c, err := e.srv.Admin.CreateCampaign(ctxT(t), campaign("Frühling \u05d0\u200f sale", "line one\r\nline two\n\tindented", "PROMOTION"))
	if err != nil {
		t.Fatalf("CreateCampaign with a multi-line description: %v", err)
	}
	if c.Description != "line one\r\nline two\n\tindented" {
		t.Errorf("description stored as %q", c.Description)
	}
	good, err := e.srv.Admin.CreateTemplate(ctxT(t), e.templateRequest("5 off"))
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}

	// Updates are held to the same checks and change nothing when refused.
	_, err = e.srv.Admin.UpdateCampaign(ctxT(t), &couponv1.UpdateCampaignRequest{CampaignId: c.Id, Name: ptr("Spring\u202esale")})
	wantInvalidField(t, err, "name")
	_, err = e.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: good.Id, Name: ptr("x\u0000"), Description: ptr("fine")})
	wantInvalidField(t, err, "name")
	gotC, err := e.srv.Admin.GetCampaign(ctxT(t), &couponv1.GetCampaignRequest{CampaignId: c.Id})
	if err != nil || gotC.Name != c.Name {
		t.Fatalf("campaign after a refused update = %v, %v; want name %q", gotC, err, c.Name)
	}
	gotT, err := e.srv.Admin.GetTemplate(ctxT(t), &couponv1.GetTemplateRequest{TemplateId: good.Id})
	if err != nil || gotT.Name != good.Name || gotT.Description != good.Description {
		t.Fatalf("template after a refused update = %v, %v; want %q/%q", gotT, err, good.Name, good.Description)
	}
}

// TestLogoMustBeHTTPURL: a template's logo is empty or an absolute https:
// or http: URL with a host; anything else is INVALID_ARGUMENT naming logo,
// on create and on update, and nothing is stored.
func TestLogoMustBeHTTPURL(t *testing.T) {
	e := newEnv(t)
	_, templates := e.catalogSize(t)
	for _, logo := range []string{
		"javascript:alert(1)",
		"JavaScript:alert(1)",
		"data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
		"vbscript:msgbox(1)",
		"file:///etc/passwd",
		"//evil.example/logo.png",
		"/static/logo.png",
		"logo.png",
		"https:logo.png",
		"https://",
		"http:///logo.png",
		"https://cdn.example/logo.png\u0000",
		"https://cdn.example/\u202elogo.png",
		"https://cdn.example/a logo.png",
	} {
		t.Run(logo, func(t *testing.T) {
			req := e.templateRequest("with logo")
			req.Logo = logo
			_, err := e.srv.Admin.CreateTemplate(ctxT(t), req)
			wantInvalidField(t, err, "logo")
		})
	}
	if _, got := e.catalogSize(t); got != templates {
		t.Fatalf("%d templates after refused logos, want %d", got, templates)
	}

	for _, logo := range []string{"", "https://cdn.example/logo.png", "HTTPS://cdn.example/l.png?v=2", "http://cdn.example:8080/l.png"} {
		req := e.templateRequest("with logo")
		req.Logo = logo
		tpl, err := e.srv.Admin.CreateTemplate(ctxT(t), req)
		if err != nil {
			t.Fatalf("CreateTemplate with logo %q: %v", logo, err)
		}
		if tpl.Logo != logo {
			t.Errorf("logo stored as %q, want %q", tpl.Logo, logo)
		}
	}

	tpl, err := e.srv.Admin.CreateTemplate(ctxT(t), e.templateRequest("update logo"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, Logo: ptr("javascript:alert(1)")})
	wantInvalidField(t, err, "logo")
	got, err := e.srv.Admin.GetTemplate(ctxT(t), &couponv1.GetTemplateRequest{TemplateId: tpl.Id})
	if err != nil || got.Logo != "" {
		t.Fatalf("template after a refused logo update = %v, %v; want no logo", got, err)
	}
}
