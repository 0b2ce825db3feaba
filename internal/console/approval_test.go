package console_test

import (
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

const tokenCarol = "test-admin-carol"

// TestApprovalPageShowsMoneyChanges: alice creates a template and bob
// raises its discount; the page carol approves from shows the discount as
// created and as it is now, names bob as the money editor, and posts the
// version it showed. When bob edits again before carol presses Approve,
// the approval is refused with TEMPLATE_CHANGED and the page shows the new
// version, which carol then approves.
func TestApprovalPageShowsMoneyChanges(t *testing.T) {
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Auth.Callers = append(c.Auth.Callers, auth.Caller{Identity: "carol", Roles: []string{auth.RoleAdmin}, TokenSHA256: auth.HashToken(tokenCarol)})
	})
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
		Name: "review", StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string) *couponv1.CouponTemplate {
		tpl, err := srv.Admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
			CampaignId: camp.Id, Name: name, CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 100,
			MinOrderAmount: 5000, TotalStock: 10,
			ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return tpl
	}
	edit := func(id, discount int64) {
		if _, err := srv.AdminAs(coupontest.TokenBob).UpdateTemplate(ctx, &couponv1.UpdateTemplateRequest{TemplateId: id, DiscountAmount: &discount}); err != nil {
			t.Fatalf("bob edits the discount: %v", err)
		}
	}
	edited, untouched := create("edited"), create("untouched")
	edit(edited.Id, 4900)

	_, page := get(t, cl, ts.URL+"/console/signin")
	if resp, _ := post(t, cl, ts.URL+"/console/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {tokenCarol}, "name": {"carol"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("carol signs in: http %d", resp.StatusCode)
	}

	_, page = get(t, cl, fmt.Sprintf("%s/console/templates/%d", ts.URL, edited.Id))
	row := regexp.MustCompile(`<tr data-field="discount_amount"><td>discount_amount</td><td><code>([^<]*)</code></td><td><code>([^<]*)</code></td></tr>`).FindStringSubmatch(page)
	if row == nil || row[1] != "1.00" || row[2] != "49.00" {
		t.Fatalf("the approval page shows discount_amount %v, want 1.00 as created and 49.00 now:\n%s", row, page)
	}
	if n := strings.Count(page, "<tr data-field="); n != 1 {
		t.Errorf("the approval page lists %d changed rules, want only the discount", n)
	}
	if !strings.Contains(page, `data-testid="money-edited-by">bob<`) {
		t.Error("the approval page does not name bob as the money editor")
	}
	if v := versionOf(t, page, edited.Id); v != "2" {
		t.Fatalf("the approve form posts version %q, want 2 (the version shown)", v)
	}

	_, page = get(t, cl, fmt.Sprintf("%s/console/templates/%d", ts.URL, untouched.Id))
	if !strings.Contains(page, `data-testid="review-none"`) || strings.Contains(page, `data-testid="review-changes"`) {
		t.Errorf("an unedited template's approval page does not say that nothing changed:\n%s", page)
	}

	// Bob edits again after carol looked: her approval of what she saw is refused.
	edit(edited.Id, 5000)
	resp, page := post(t, cl, fmt.Sprintf("%s/console/templates/%d/approve", ts.URL, edited.Id),
		url.Values{"csrf": {csrfOf(t, page)}, "from": {"template"}, "version": {"2"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, `data-reason="TEMPLATE_CHANGED"`) {
		t.Fatalf("approving a version edited since: http %d, want 400 with TEMPLATE_CHANGED:\n%s", resp.StatusCode, page)
	}
	if !strings.Contains(page, "<code>50.00</code>") || versionOf(t, page, edited.Id) != "3" {
		t.Fatalf("after TEMPLATE_CHANGED the page does not show the new discount and version 3:\n%s", page)
	}
	if got, _ := srv.Admin.GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: edited.Id}); got.GetStatus() != couponv1.CouponTemplate_PENDING_APPROVAL {
		t.Fatalf("after the refused approval the template is %s, want PENDING_APPROVAL", got.GetStatus())
	}

	resp, page = post(t, cl, fmt.Sprintf("%s/console/templates/%d/approve", ts.URL, edited.Id),
		url.Values{"csrf": {csrfOf(t, page)}, "from": {"template"}, "version": {versionOf(t, page, edited.Id)}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "approved by carol") {
		t.Fatalf("approving the version shown: http %d, want the flash of carol's approval:\n%s", resp.StatusCode, page)
	}
	if got, _ := srv.Admin.GetTemplate(ctx, &couponv1.GetTemplateRequest{TemplateId: edited.Id}); got.GetStatus() != couponv1.CouponTemplate_ACTIVE || got.GetDiscountAmount() != 5000 {
		t.Fatalf("after approval: %s with discount %d, want ACTIVE with 5000", got.GetStatus(), got.GetDiscountAmount())
	}
}

// versionOf is the version the page's approve form for template id posts.
func versionOf(t *testing.T, page string, id int64) string {
	t.Helper()
	m := regexp.MustCompile(fmt.Sprintf(`name="version" value="([^"]*)" data-testid="approve-version-%d"`, id)).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no approve form for template %d in the page:\n%s", id, page)
	}
	return m[1]
}
