package console_test

import (
	"database/sql"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestConsoleShowsOnlyHTTPLogos: the template page links a logo only if it
// is an http: or https: URL. A row stored before logos were checked (here
// written behind the service's back) keeps its logo, which the page does
// not show; the row can still be edited, and a new bad logo is refused.
func TestConsoleShowsOnlyHTTPLogos(t *testing.T) {
	srv := coupontest.Start(t)
	c, err := console.New(console.Config{}, console.Deps{Admin: srv.Admin, Coupons: srv.Coupons})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c)
	t.Cleanup(ts.Close)
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}

	ctx := t.Context()
	now := time.Now()
	camp, err := srv.Admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "logos", StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	create := func(logo string) *couponv1.CouponTemplate {
		tpl, err := srv.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
			CampaignId: camp.Id, Name: "logo", Logo: logo, CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 100,
			TotalStock: 10, ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return tpl
	}
	good, legacy := create("https://cdn.example/logo.png"), create("")

	db, err := sql.Open("mysql", srv.Config.MySQL.MainDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(ctx, "UPDATE coupon_template SET logo = ? WHERE id = ?", "javascript:alert(1)", legacy.Id); err != nil {
		t.Fatalf("store a legacy logo: %v", err)
	}

	_, page := get(t, cl, ts.URL+"/console/signin")
	if resp, _ := post(t, cl, ts.URL+"/console/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {coupontest.TokenAlice}, "name": {"alice"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice signs in: http %d", resp.StatusCode)
	}
	_, page = get(t, cl, fmt.Sprintf("%s/console/templates/%d", ts.URL, good.Id))
	if !strings.Contains(page, `<a href="https://cdn.example/logo.png"`) {
		t.Errorf("page of a template with an https logo does not link it:\n%s", page)
	}
	_, page = get(t, cl, fmt.Sprintf("%s/console/templates/%d", ts.URL, legacy.Id))
	// The edit form may hold the stored text in an input for the operator
	// to fix; no link or image may carry it.
	for _, attr := range []string{`href="javascript`, `src="javascript`, `href="#ZgotmplZ"`} {
		if strings.Contains(page, attr) {
			t.Errorf("page of a template with a javascript: logo has %s", attr)
		}
	}
	if want := `data-testid="template-logo">(stored logo not shown`; !strings.Contains(page, want) {
		t.Errorf("page of a template with a javascript: logo does not say it is hidden")
	}

	desc := "edited after the check came in"
	if _, err := srv.Admin.UpdateTemplate(ctx, &couponv1.UpdateTemplateRequest{TemplateId: legacy.Id, Description: &desc}); err != nil {
		t.Errorf("editing another field of a legacy row: %v", err)
	}
	bad := "data:text/html,hi"
	if _, err := srv.Admin.UpdateTemplate(ctx, &couponv1.UpdateTemplateRequest{TemplateId: legacy.Id, Logo: &bad}); err == nil {
		t.Errorf("a legacy row took a new data: logo")
	}
	fixed := "https://cdn.example/fixed.png"
	got, err := srv.Admin.UpdateTemplate(ctx, &couponv1.UpdateTemplateRequest{TemplateId: legacy.Id, Logo: &fixed})
	if err != nil || got.Logo != fixed {
		t.Errorf("fixing a legacy logo = %v, %v", got, err)
	}
}
