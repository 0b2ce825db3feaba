package participant_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
)

func as(t *testing.T, identity, method string) context.Context {
	return participant.WithCaller(ctxT(t), participant.Caller{Identity: identity, Roles: []string{"admin"}, Method: method})
}

func wantReason(t *testing.T, err error, code participant.Code, reason string) {
	t.Helper()
	if participant.ErrorCode(err) != code || participant.ErrorReason(err) != reason {
		t.Fatalf("error = %v (%s/%s), want %s/%s", err, participant.ErrorCode(err), participant.ErrorReason(err), code, reason)
	}
}

// TestIdentityAndAuditLog: with an authenticated caller, created_by /
// approved_by / operator are the caller's identity (filled when empty,
// IDENTITY_MISMATCH when naming someone else), maker-checker compares
// identities, and every change — and no refused one — leaves an audit row
// with who, which method, and the entity before and after.
func TestIdentityAndAuditLog(t *testing.T) {
	e := newEnv(t)
	now := e.clk.Now()
	campaign := func(by string) *participant.Campaign {
		return &participant.Campaign{Name: "audited", CreatedBy: by, StartTime: now.Add(-time.Hour), EndTime: now.Add(48 * time.Hour)}
	}
	_, err := e.svc.CreateCampaign(as(t, "alice", "/coupon.v1.AdminService/CreateCampaign"), campaign("bob"))
	wantReason(t, err, participant.EPERMISSION, participant.ReasonIdentityMismatch)
	c, err := e.svc.CreateCampaign(as(t, "alice", "/coupon.v1.AdminService/CreateCampaign"), campaign(""))
	if err != nil || c.CreatedBy != "alice" {
		t.Fatalf("CreateCampaign = %+v, %v; want created by alice", c, err)
	}
	tpl, err := e.svc.CreateTemplate(as(t, "alice", "/coupon.v1.AdminService/CreateTemplate"), &participant.Template{
		CampaignID: c.ID, Name: "audited", Type: participant.FixedAmount, DiscountAmount: 100, TotalStock: 10,
		ValidFrom: now.Add(-time.Minute), ValidUntil: now.Add(24 * time.Hour), Returnable: true,
	})
	if err != nil || tpl.CreatedBy != "alice" {
		t.Fatalf("CreateTemplate = %+v, %v", tpl, err)
	}
	approve := "/coupon.v1.AdminService/ApproveTemplate"
	_, err = e.svc.ApproveTemplate(as(t, "alice", approve), tpl.ID, tpl.Version, "")
	wantReason(t, err, participant.EREFUSED, participant.ReasonApproverIsCreator)
	_, err = e.svc.ApproveTemplate(as(t, "alice", approve), tpl.ID, tpl.Version, "bob")
	wantReason(t, err, participant.EPERMISSION, participant.ReasonIdentityMismatch)
	got, err := e.svc.ApproveTemplate(as(t, "bob", approve), tpl.ID, tpl.Version, "")
	if err != nil || got.ApprovedBy != "bob" || got.Status != participant.TemplateActive {
		t.Fatalf("ApproveTemplate by bob = %+v, %v", got, err)
	}
	if _, err := e.svc.AddStock(as(t, "bob", "/coupon.v1.AdminService/AddStock"), participant.StockOp{RequestID: "audit-stock", TemplateID: tpl.ID, Amount: 5}); err != nil {
		t.Fatal(err)
	}

	// The newest four: newEnv's own campaign came before them.
	all, _, err := e.svc.ListAuditLog(ctxT(t), participant.AuditFilter{}, participant.Page{Size: 4})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ identity, method, entity string }
	var rows []row
	for _, a := range all {
		rows = append(rows, row{a.Identity, a.Method[strings.LastIndex(a.Method, "/")+1:], a.EntityType})
	}
	want := []row{ // newest first; refusals wrote nothing
		{"bob", "AddStock", "stock"},
		{"bob", "ApproveTemplate", "template"},
		{"alice", "CreateTemplate", "template"},
		{"alice", "CreateCampaign", "campaign"},
	}
	if len(rows) != len(want) {
		t.Fatalf("audit log = %v, want %v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Fatalf("audit row %d = %v, want %v (all %v)", i, rows[i], want[i], rows)
		}
	}
	approval := all[1]
	if !strings.Contains(approval.Before, `"Status":1`) || !strings.Contains(approval.After, `"Status":2`) || !strings.Contains(approval.After, `"ApprovedBy":"bob"`) {
		t.Fatalf("approval before/after = %s / %s", approval.Before, approval.After)
	}
	if all[3].Before != "" || !strings.Contains(all[3].After, `"CreatedBy":"alice"`) {
		t.Fatalf("creation before/after = %q / %s", all[3].Before, all[3].After)
	}
	bobs, _, err := e.svc.ListAuditLog(ctxT(t), participant.AuditFilter{Identity: "bob"}, participant.Page{Size: 1})
	if err != nil || len(bobs) != 1 || bobs[0].EntityType != "stock" {
		t.Fatalf("bob's newest change = %v, %v", bobs, err)
	}
	ofTemplate, _, err := e.svc.ListAuditLog(ctxT(t), participant.AuditFilter{EntityType: "template", EntityID: tpl.ID}, participant.Page{})
	if err != nil || len(ofTemplate) != 2 {
		t.Fatalf("template's changes = %d, %v; want 2", len(ofTemplate), err)
	}
	future, _, err := e.svc.ListAuditLog(ctxT(t), participant.AuditFilter{Since: now.Add(time.Hour)}, participant.Page{})
	if err != nil || len(future) != 0 {
		t.Fatalf("changes since an hour from now = %d, %v", len(future), err)
	}
}
