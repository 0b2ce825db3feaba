package rpc_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// tokenCarol is a third admin, so that a template alice created and bob
// edited still has someone who may approve it.
const tokenCarol = "test-admin-carol"

func withCarol() coupontest.Option {
	return func(c *app.Config) {
		c.Auth.Callers = append(c.Auth.Callers, auth.Caller{
			Identity: "carol", Roles: []string{auth.RoleAdmin}, TokenSHA256: auth.HashToken(tokenCarol),
		})
	}
}

// pendingTemplate has alice create a PENDING_APPROVAL "1 off" template.
func pendingTemplate(t *testing.T, srv *coupontest.Server, name string) *couponv1.CouponTemplate {
	t.Helper()
	now := time.Now()
	camp, err := srv.Admin.CreateCampaign(ctxT(t), &couponv1.CreateCampaignRequest{
		Name: "approvals", CampaignType: "PROMOTION",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	tpl, err := srv.Admin.CreateTemplate(ctxT(t), &couponv1.CreateTemplateRequest{
		CampaignId: camp.Id, Name: name, CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 100, MinOrderAmount: 5000, TotalStock: 10,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(48 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if tpl.CreatedBy != "alice" || tpl.Version != 1 || tpl.MoneyEditedBy != "" {
		t.Fatalf("created template: created_by %q, version %d, money_edited_by %q; want alice, 1, none", tpl.CreatedBy, tpl.Version, tpl.MoneyEditedBy)
	}
	return tpl
}

func getTemplate(t *testing.T, srv *coupontest.Server, id int64) *couponv1.CouponTemplate {
	t.Helper()
	tpl, err := srv.Admin.GetTemplate(ctxT(t), &couponv1.GetTemplateRequest{TemplateId: id})
	if err != nil {
		t.Fatalf("GetTemplate: %v", err)
	}
	return tpl
}

// templateAudit lists the methods of the template's audit rows, oldest first.
func templateAudit(t *testing.T, srv *coupontest.Server, id int64) ([]string, []*couponv1.AuditEntry) {
	t.Helper()
	res, err := srv.Admin.ListAuditLog(ctxT(t), &couponv1.ListAuditLogRequest{EntityType: "template", EntityId: id, PageSize: 100})
	if err != nil {
		t.Fatalf("ListAuditLog: %v", err)
	}
	var methods []string
	var entries []*couponv1.AuditEntry
	for i := len(res.Entries) - 1; i >= 0; i-- {
		e := res.Entries[i]
		methods = append(methods, e.Method[strings.LastIndex(e.Method, "/")+1:])
		entries = append(entries, e)
	}
	return methods, entries
}

// TestLastMoneyEditorCannotApprove: alice creates a template, bob raises
// its discount from 1.00 to 49.00; bob may not approve the rule he wrote
// (APPROVER_EDITED_RULE), alice still may not (APPROVER_IS_CREATOR), and
// carol, who did neither, may. An edit of presentation only does not make
// bob its money editor.
func TestLastMoneyEditorCannotApprove(t *testing.T) {
	srv := start(t, withCarol())
	bob, carol := srv.AdminAs(coupontest.TokenBob), srv.AdminAs(tokenCarol)

	t.Run("money edit", func(t *testing.T) {
		tpl := pendingTemplate(t, srv, "1 off 50")
		edited, err := bob.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, DiscountAmount: ptr[int64](4900)})
		if err != nil {
			t.Fatalf("bob edits the discount: %v", err)
		}
		if edited.MoneyEditedBy != "bob" || edited.DiscountAmount != 4900 || edited.Version != 2 {
			t.Fatalf("after bob's edit: money_edited_by %q, discount %d, version %d; want bob, 4900, 2", edited.MoneyEditedBy, edited.DiscountAmount, edited.Version)
		}
		// The editor is written with the edit and its audit row.
		_, audit := templateAudit(t, srv, tpl.Id)
		if len(audit) != 2 || !strings.Contains(audit[1].AfterJson, `"MoneyEditedBy":"bob"`) || audit[1].Identity != "bob" {
			t.Fatalf("audit after bob's edit = %v, want the edit by bob recording him as money editor", audit)
		}

		_, err = bob.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: edited.Version})
		wantErr(t, err, codes.FailedPrecondition, "APPROVER_EDITED_RULE")
		_, err = srv.Admin.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: edited.Version})
		wantErr(t, err, codes.FailedPrecondition, "APPROVER_IS_CREATOR")

		// The refusals wrote nothing.
		if got := getTemplate(t, srv, tpl.Id); got.Status != couponv1.CouponTemplate_PENDING_APPROVAL || got.Version != 2 || got.ApprovedBy != "" {
			t.Fatalf("after refused approvals: status %s, version %d, approved_by %q; want PENDING_APPROVAL, 2, none", got.Status, got.Version, got.ApprovedBy)
		}
		if methods, _ := templateAudit(t, srv, tpl.Id); strings.Join(methods, ",") != "CreateTemplate,UpdateTemplate" {
			t.Fatalf("audit after refused approvals = %v, want CreateTemplate,UpdateTemplate", methods)
		}

		got, err := carol.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: edited.Version})
		if err != nil {
			t.Fatalf("carol approves: %v", err)
		}
		if got.Status != couponv1.CouponTemplate_ACTIVE || got.ApprovedBy != "carol" || got.DiscountAmount != 4900 {
			t.Fatalf("after carol's approval: status %s, approved_by %q, discount %d; want ACTIVE, carol, 4900", got.Status, got.ApprovedBy, got.DiscountAmount)
		}
	})

	t.Run("presentation edit", func(t *testing.T) {
		tpl := pendingTemplate(t, srv, "renamed later")
		edited, err := bob.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, Name: ptr("spring 1 off 50"), Description: ptr("for the spring sale")})
		if err != nil {
			t.Fatalf("bob renames: %v", err)
		}
		if edited.MoneyEditedBy != "" {
			t.Fatalf("a rename made %q the money editor, want nobody", edited.MoneyEditedBy)
		}
		// A "change" to the value already there changes no money rule.
		edited, err = bob.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, DiscountAmount: ptr[int64](100)})
		if err != nil || edited.MoneyEditedBy != "" {
			t.Fatalf("bob re-sends the same discount: money_edited_by %q, %v; want nobody", edited.GetMoneyEditedBy(), err)
		}
		got, err := bob.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: edited.Version})
		if err != nil || got.Status != couponv1.CouponTemplate_ACTIVE || got.ApprovedBy != "bob" {
			t.Fatalf("bob approves a template whose money rules alice alone wrote = %v, %v; want ACTIVE by bob", got, err)
		}
	})
}

// TestApproveStaleVersion: carol reviews version 1; bob then changes the
// discount. Carol's approval of version 1 is refused with TEMPLATE_CHANGED
// and writes nothing; her approval of the version she then reviews goes
// through. An approval naming no version is invalid.
func TestApproveStaleVersion(t *testing.T) {
	srv := start(t, withCarol())
	bob, carol := srv.AdminAs(coupontest.TokenBob), srv.AdminAs(tokenCarol)
	tpl := pendingTemplate(t, srv, "1 off 50")

	_, err := carol.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id})
	wantErr(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	if f := fieldOf(err); f != "version" {
		t.Fatalf("approval without a version names field %q, want version", f)
	}

	seen := getTemplate(t, srv, tpl.Id)
	if _, err := bob.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, DiscountAmount: ptr[int64](4900)}); err != nil {
		t.Fatalf("bob edits the discount: %v", err)
	}
	_, err = carol.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: seen.Version})
	wantErr(t, err, codes.FailedPrecondition, "TEMPLATE_CHANGED")

	now := getTemplate(t, srv, tpl.Id)
	if now.Status != couponv1.CouponTemplate_PENDING_APPROVAL || now.ApprovedBy != "" || now.Version != seen.Version+1 || now.DiscountAmount != 4900 {
		t.Fatalf("after the stale approval: status %s, approved_by %q, version %d, discount %d; want PENDING_APPROVAL, none, %d, 4900",
			now.Status, now.ApprovedBy, now.Version, now.DiscountAmount, seen.Version+1)
	}
	if methods, _ := templateAudit(t, srv, tpl.Id); strings.Join(methods, ",") != "CreateTemplate,UpdateTemplate" {
		t.Fatalf("audit after the stale approval = %v, want CreateTemplate,UpdateTemplate", methods)
	}
	// No claim may be made: the template is still pending.
	_, err = srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "stale-1", UserId: 1, TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "TEMPLATE_NOT_ACTIVE")

	got, err := carol.ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: now.Version})
	if err != nil {
		t.Fatalf("carol approves the version she reviewed: %v", err)
	}
	if got.Status != couponv1.CouponTemplate_ACTIVE || got.ApprovedBy != "carol" || got.Version != now.Version+1 {
		t.Fatalf("after approval: status %s, approved_by %q, version %d; want ACTIVE, carol, %d", got.Status, got.ApprovedBy, got.Version, now.Version+1)
	}
}

func ptr[T any](v T) *T { return &v }
