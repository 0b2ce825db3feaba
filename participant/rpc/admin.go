package rpc

import (
	"context"
	"log/slog"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Admin serves coupon.v1.AdminService.
type Admin struct {
	couponv1.UnimplementedAdminServiceServer
	svc   *participant.Service
	hooks Webhooks // nil: webhooks are off
	log   *slog.Logger
}

var _ couponv1.AdminServiceServer = (*Admin)(nil)

// NewAdmin returns the admin server. hooks is nil when the service runs
// without webhooks: their calls then answer WEBHOOKS_OFF.
func NewAdmin(svc *participant.Service, hooks Webhooks, log *slog.Logger) *Admin {
	return &Admin{svc: svc, hooks: hooks, log: log}
}

// CreateCampaign creates an ACTIVE campaign.
func (a *Admin) CreateCampaign(ctx context.Context, r *couponv1.CreateCampaignRequest) (*couponv1.Campaign, error) {
	c, err := a.svc.CreateCampaign(ctx, &participant.Campaign{
		RequestID: r.RequestId, Name: r.Name, Description: r.Description, Type: r.CampaignType,
		StartTime: tm(r.StartTime), EndTime: tm(r.EndTime), CreatedBy: r.CreatedBy,
	})
	if err != nil {
		return nil, err
	}
	return campaignPB(c), nil
}

// UpdateCampaign changes a campaign.
func (a *Admin) UpdateCampaign(ctx context.Context, r *couponv1.UpdateCampaignRequest) (*couponv1.Campaign, error) {
	c, err := a.svc.UpdateCampaign(ctx, r.CampaignId, participant.CampaignChange{
		Name: r.Name, Description: r.Description, Type: r.CampaignType, Status: participant.CampaignStatus(r.Status),
		StartTime: tm(r.StartTime), EndTime: tm(r.EndTime), UpdatedBy: r.UpdatedBy,
	})
	if err != nil {
		return nil, err
	}
	return campaignPB(c), nil
}

// GetCampaign reads a campaign.
func (a *Admin) GetCampaign(ctx context.Context, r *couponv1.GetCampaignRequest) (*couponv1.Campaign, error) {
	c, err := a.svc.GetCampaign(ctx, r.CampaignId)
	if err != nil {
		return nil, err
	}
	return campaignPB(c), nil
}

// ListCampaigns lists campaigns, newest first.
func (a *Admin) ListCampaigns(ctx context.Context, r *couponv1.ListCampaignsRequest) (*couponv1.ListCampaignsResponse, error) {
	cs, next, err := a.svc.ListCampaigns(ctx, participant.CampaignStatus(r.Status), participant.Page{Size: int(r.PageSize), After: r.PageToken})
	if err != nil {
		return nil, err
	}
	out := &couponv1.ListCampaignsResponse{NextPageToken: next}
	for _, c := range cs {
		out.Campaigns = append(out.Campaigns, campaignPB(c))
	}
	return out, nil
}

// CreateTemplate creates a PENDING_APPROVAL template.
func (a *Admin) CreateTemplate(ctx context.Context, r *couponv1.CreateTemplateRequest) (*couponv1.CouponTemplate, error) {
	t, err := a.svc.CreateTemplate(ctx, &participant.Template{
		RequestID: r.RequestId, CampaignID: r.CampaignId, Name: r.Name, Description: r.Description, Logo: r.Logo,
		Type: participant.CouponType(r.CouponType), DiscountAmount: r.DiscountAmount, PercentOff: r.PercentOff,
		MaxDiscount: r.MaxDiscount, MinOrderAmount: r.MinOrderAmount, ProductLines: r.ProductLines,
		UsageRule: r.UsageRule, TotalStock: r.TotalStock, PerUserLimit: r.PerUserLimit, DailyUseLimit: r.DailyUseLimit,
		ValidFrom: tm(r.ValidFrom), ValidUntil: tm(r.ValidUntil), ValidDaysAfterClaim: r.ValidDaysAfterClaim,
		CreatedBy: r.CreatedBy, SubStockCount: r.SubStockCount, Returnable: r.Returnable == nil || *r.Returnable,
	})
	if err != nil {
		return nil, err
	}
	return templatePB(t), nil
}

// UpdateTemplate changes a template.
func (a *Admin) UpdateTemplate(ctx context.Context, r *couponv1.UpdateTemplateRequest) (*couponv1.CouponTemplate, error) {
	t, err := a.svc.UpdateTemplate(ctx, r.TemplateId, participant.TemplateChange{
		Name: r.Name, Description: r.Description, Logo: r.Logo, UsageRule: r.UsageRule,
		Status: participant.TemplateStatus(r.Status), PerUserLimit: r.PerUserLimit, DailyUseLimit: r.DailyUseLimit,
		DiscountAmount: r.DiscountAmount, MaxDiscount: r.MaxDiscount, MinOrderAmount: r.MinOrderAmount,
		PercentOff: r.PercentOff, ValidUntil: tm(r.ValidUntil), UpdatedBy: r.UpdatedBy, Returnable: r.Returnable,
	})
	if err != nil {
		return nil, err
	}
	return templatePB(t), nil
}

// ApproveTemplate activates a template at the version the approver
// reviewed; the approver must be neither its creator nor its money editor.
func (a *Admin) ApproveTemplate(ctx context.Context, r *couponv1.ApproveTemplateRequest) (*couponv1.CouponTemplate, error) {
	t, err := a.svc.ApproveTemplate(ctx, r.TemplateId, r.Version, r.ApprovedBy)
	if err != nil {
		return nil, err
	}
	return templatePB(t), nil
}

// GetTemplate reads a template.
func (a *Admin) GetTemplate(ctx context.Context, r *couponv1.GetTemplateRequest) (*couponv1.CouponTemplate, error) {
	t, err := a.svc.GetTemplate(ctx, r.TemplateId)
	if err != nil {
		return nil, err
	}
	return templatePB(t), nil
}

// ListTemplates lists templates.
func (a *Admin) ListTemplates(ctx context.Context, r *couponv1.ListTemplatesRequest) (*couponv1.ListTemplatesResponse, error) {
	ts, next, err := a.svc.ListTemplates(ctx, r.CampaignId, participant.TemplateStatus(r.Status), participant.Page{Size: int(r.PageSize), After: r.PageToken})
	if err != nil {
		return nil, err
	}
	out := &couponv1.ListTemplatesResponse{NextPageToken: next}
	for _, t := range ts {
		out.Templates = append(out.Templates, templatePB(t))
	}
	return out, nil
}

// AddStock tops up stock once per request ID.
func (a *Admin) AddStock(ctx context.Context, r *couponv1.AddStockRequest) (*couponv1.AddStockResponse, error) {
	res, err := a.svc.AddStock(ctx, participant.StockOp{
		RequestID: r.RequestId, TemplateID: r.TemplateId, Amount: r.Amount, SubStockCount: r.SubStockCount, Operator: r.Operator,
	})
	if err != nil {
		return nil, err
	}
	return &couponv1.AddStockResponse{
		TemplateId: res.Template.ID, TotalStock: res.Template.TotalStock, RemainingStock: res.Remaining, Replayed: res.Replayed,
	}, nil
}

// GetTemplateStats counts a template's coupons.
func (a *Admin) GetTemplateStats(ctx context.Context, r *couponv1.GetTemplateStatsRequest) (*couponv1.TemplateStats, error) {
	st, err := a.svc.TemplateStats(ctx, r.TemplateId)
	if err != nil {
		return nil, err
	}
	return statsPB(st), nil
}

// ListCoupons lists a template's coupons across shards.
func (a *Admin) ListCoupons(ctx context.Context, r *couponv1.ListCouponsRequest) (*couponv1.ListCouponsResponse, error) {
	cs, next, err := a.svc.ListTemplateCoupons(ctx, r.TemplateId, participant.CouponStatus(r.Status), participant.Page{Size: int(r.PageSize), After: r.PageToken})
	if err != nil {
		return nil, err
	}
	return &couponv1.ListCouponsResponse{Coupons: couponsPB(cs), NextPageToken: next}, nil
}

// LookupCoupons finds coupons by code or user, with their ledger history.
func (a *Admin) LookupCoupons(ctx context.Context, r *couponv1.LookupCouponsRequest) (*couponv1.LookupCouponsResponse, error) {
	recs, next, err := a.svc.LookupCoupons(ctx, r.CouponCode, r.UserId, participant.Page{Size: int(r.PageSize), After: r.PageToken})
	if err != nil {
		return nil, err
	}
	out := &couponv1.LookupCouponsResponse{NextPageToken: next}
	for _, rec := range recs {
		pb := &couponv1.CouponRecord{Coupon: couponPB(rec.Coupon)}
		for _, e := range rec.Ledger {
			pb.Ledger = append(pb.Ledger, &couponv1.LedgerEntry{
				Id: e.ID, Op: e.Op, OrderNo: e.OrderNo, Gid: e.GID, BranchId: e.BranchID, CouponCode: e.CouponCode,
				UserId: e.UserID, TemplateId: e.TemplateID, DiscountAmount: e.Discount, CreatedAt: ts(e.CreatedAt),
			})
		}
		out.Records = append(out.Records, pb)
	}
	return out, nil
}

// ListAuditLog reads the audit log, newest first.
func (a *Admin) ListAuditLog(ctx context.Context, r *couponv1.ListAuditLogRequest) (*couponv1.ListAuditLogResponse, error) {
	es, next, err := a.svc.ListAuditLog(ctx, participant.AuditFilter{
		EntityType: r.EntityType, EntityID: r.EntityId, Identity: r.Identity, Since: tm(r.Since), Until: tm(r.Until),
	}, participant.Page{Size: int(r.PageSize), After: r.PageToken})
	if err != nil {
		return nil, err
	}
	out := &couponv1.ListAuditLogResponse{NextPageToken: next}
	for _, e := range es {
		out.Entries = append(out.Entries, &couponv1.AuditEntry{
			Id: e.ID, Identity: e.Identity, Method: e.Method, EntityType: e.EntityType, EntityId: e.EntityID,
			BeforeJson: e.Before, AfterJson: e.After, CreatedAt: ts(e.CreatedAt),
		})
	}
	return out, nil
}
