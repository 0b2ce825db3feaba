package rpc

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tm(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime().UTC()
}

func campaignPB(c *participant.Campaign) *couponv1.Campaign {
	return &couponv1.Campaign{
		Id: c.ID, Name: c.Name, Description: c.Description, CampaignType: c.Type,
		Status: couponv1.Campaign_Status(c.Status), StartTime: ts(c.StartTime), EndTime: ts(c.EndTime),
		CreatedBy: c.CreatedBy, ApprovedBy: c.ApprovedBy, CreatedAt: ts(c.CreatedAt), UpdatedAt: ts(c.UpdatedAt),
	}
}

func templatePB(t *participant.Template) *couponv1.CouponTemplate {
	return &couponv1.CouponTemplate{
		Id: t.ID, CampaignId: t.CampaignID, Name: t.Name, Description: t.Description, Logo: t.Logo,
		CouponType: couponv1.CouponTemplate_CouponType(t.Type), DiscountAmount: t.DiscountAmount,
		PercentOff: t.PercentOff, MaxDiscount: t.MaxDiscount, MinOrderAmount: t.MinOrderAmount,
		ProductLines: t.ProductLines, UsageRule: t.UsageRule, TotalStock: t.TotalStock,
		PerUserLimit: t.PerUserLimit, DailyUseLimit: t.DailyUseLimit, ValidFrom: ts(t.ValidFrom),
		ValidUntil: ts(t.ValidUntil), ValidDaysAfterClaim: t.ValidDaysAfterClaim,
		Status: couponv1.CouponTemplate_Status(t.Status), CreatedBy: t.CreatedBy, ApprovedBy: t.ApprovedBy,
		SubStockCount: t.SubStockCount, CreatedAt: ts(t.CreatedAt), UpdatedAt: ts(t.UpdatedAt), Returnable: t.Returnable,
		Version: t.Version, MoneyEditedBy: t.MoneyEditedBy,
	}
}

func couponPB(c *participant.Coupon) *couponv1.Coupon {
	return &couponv1.Coupon{
		Id: c.ID, Code: c.Code, TemplateId: c.TemplateID, UserId: c.UserID,
		Status: couponv1.Coupon_Status(c.Status), ClaimedAt: ts(c.ClaimedAt), ExpireAt: ts(c.ExpireAt),
		OrderNo: c.OrderNo, DiscountAmount: c.DiscountAmount, UsedAt: ts(c.UsedAt),
		RequestId: c.RequestID, CampaignId: c.CampaignID, Gid: c.LockGID,
	}
}

func couponsPB(cs []*participant.Coupon) []*couponv1.Coupon {
	out := make([]*couponv1.Coupon, len(cs))
	for i, c := range cs {
		out[i] = couponPB(c)
	}
	return out
}

func orderFromPB(o *couponv1.Order) participant.Order {
	if o == nil {
		return participant.Order{}
	}
	out := participant.Order{
		OrderNo: o.OrderNo, UserID: o.UserId, Amount: o.Amount, Currency: o.Currency, ProductLine: o.ProductLine,
	}
	for _, it := range o.Items {
		out.Items = append(out.Items, participant.Item{SKU: it.Sku, ProductLine: it.ProductLine, Quantity: it.Quantity, Amount: it.Amount})
	}
	return out
}

func statsPB(s participant.TemplateStats) *couponv1.TemplateStats {
	return &couponv1.TemplateStats{
		TemplateId: s.TemplateID, TotalStock: s.TotalStock, RemainingStock: s.RemainingStock, Issued: s.Issued,
		Available: s.Available, Locked: s.Locked, Used: s.Used, Expired: s.Expired,
	}
}
