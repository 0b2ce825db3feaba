package rpc

import (
	"context"
	"log/slog"
	"sync"

	"github.com/dtm-labs/client/dtmgrpc"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Coupons serves coupon.v1.CouponService.
type Coupons struct {
	couponv1.UnimplementedCouponServiceServer
	svc *participant.Service
	log *slog.Logger
	// encoded holds GetTemplate's message for each template version the
	// service's cache served: template ID → *templateMessage. It is not a
	// second template cache: an entry answers only while the service hands
	// back the very same *Template, so it is never staler than the service,
	// and it saves building a message on every read of a hot template.
	encoded sync.Map
}

var _ couponv1.CouponServiceServer = (*Coupons)(nil)

// NewCoupons returns the user-side server.
func NewCoupons(svc *participant.Service, log *slog.Logger) *Coupons {
	return &Coupons{svc: svc, log: log}
}

// GetCampaign reads a campaign.
func (c *Coupons) GetCampaign(ctx context.Context, r *couponv1.GetCampaignRequest) (*couponv1.Campaign, error) {
	x, err := c.svc.GetCampaign(ctx, r.CampaignId)
	if err != nil {
		return nil, err
	}
	return campaignPB(x), nil
}

// GetTemplate reads a template. Its message is built once per cached
// version and shared by every answer (gRPC only reads it).
func (c *Coupons) GetTemplate(ctx context.Context, r *couponv1.GetTemplateRequest) (*couponv1.CouponTemplate, error) {
	t, err := c.svc.PublicTemplate(ctx, r.TemplateId)
	if err != nil {
		return nil, err
	}
	if e, ok := c.encoded.Load(t.ID); ok && e.(*templateMessage).of == t {
		return e.(*templateMessage).pb, nil
	}
	pb := templatePB(t)
	c.encoded.Store(t.ID, &templateMessage{of: t, pb: pb})
	return pb, nil
}

// templateMessage is the encoding of one cached template version.
type templateMessage struct {
	of *participant.Template
	pb *couponv1.CouponTemplate
}

// ClaimCoupon claims one coupon, idempotently on request_id.
func (c *Coupons) ClaimCoupon(ctx context.Context, r *couponv1.ClaimCouponRequest) (*couponv1.Coupon, error) {
	x, err := c.svc.Claim(ctx, participant.ClaimRequest{RequestID: r.RequestId, UserID: r.UserId, TemplateID: r.TemplateId})
	if err != nil {
		return nil, err
	}
	return couponPB(x), nil
}

// ListUserCoupons lists a user's coupons.
func (c *Coupons) ListUserCoupons(ctx context.Context, r *couponv1.ListUserCouponsRequest) (*couponv1.ListUserCouponsResponse, error) {
	cs, next, err := c.svc.ListUserCoupons(ctx, r.UserId,
		participant.CouponFilter{Status: participant.CouponStatus(r.Status), TemplateID: r.TemplateId},
		participant.Page{Size: int(r.PageSize), After: r.PageToken})
	if err != nil {
		return nil, err
	}
	return &couponv1.ListUserCouponsResponse{Coupons: couponsPB(cs), NextPageToken: next}, nil
}

// GetCoupon reads one of the user's coupons.
func (c *Coupons) GetCoupon(ctx context.Context, r *couponv1.GetCouponRequest) (*couponv1.Coupon, error) {
	x, err := c.svc.GetCoupon(ctx, r.UserId, r.CouponCode, r.CouponId)
	if err != nil {
		return nil, err
	}
	return couponPB(x), nil
}

// ListApplicableCoupons lists the user's coupons that apply to an order, best first.
func (c *Coupons) ListApplicableCoupons(ctx context.Context, r *couponv1.ListApplicableCouponsRequest) (*couponv1.ListApplicableCouponsResponse, error) {
	if r.Order == nil {
		return nil, participant.Invalid("order", "is required")
	}
	as, err := c.svc.ApplicableCoupons(ctx, r.UserId, orderFromPB(r.Order))
	if err != nil {
		return nil, err
	}
	out := &couponv1.ListApplicableCouponsResponse{}
	for _, a := range as {
		out.Coupons = append(out.Coupons, &couponv1.ApplicableCoupon{Coupon: couponPB(a.Coupon), DiscountAmount: a.Discount, PayableAmount: a.Payable})
	}
	return out, nil
}

// branch reads DTM's barrier metadata; calls without it are refused. The
// payload is passed on as it is: the domain decides what a Try refuses and
// what a Confirm or Cancel that cannot name a coupon answers (OK).
func (c *Coupons) branch(ctx context.Context, r *couponv1.CouponBranchRequest) (participant.Branch, participant.BranchRequest, error) {
	bb, err := dtmgrpc.BarrierFromGrpc(ctx)
	if err != nil {
		return participant.Branch{}, participant.BranchRequest{}, participant.Errorf(participant.EINVALID, participant.ReasonMissingBarrier,
			"DTM barrier metadata (dtm-gid, dtm-branch_id, dtm-op, dtm-trans_type) is required: call through DTM")
	}
	return participant.Branch{TransType: bb.TransType, GID: bb.Gid, BranchID: bb.BranchID, Op: bb.Op},
		participant.BranchRequest{UserID: r.GetUserId(), Code: r.GetCouponCode(), Order: orderFromPB(r.GetOrder())}, nil
}

type branchFunc func(context.Context, participant.Branch, participant.BranchRequest) (participant.BranchResult, error)

func (c *Coupons) runBranch(ctx context.Context, r *couponv1.CouponBranchRequest, fn branchFunc) (*couponv1.CouponBranchResponse, error) {
	br, req, err := c.branch(ctx, r)
	if err != nil {
		return nil, err
	}
	res, err := fn(ctx, br, req)
	if err != nil {
		return nil, err
	}
	out := &couponv1.CouponBranchResponse{CouponCode: r.CouponCode, DiscountAmount: res.Discount, PayableAmount: res.Payable, OrderNo: req.Order.OrderNo}
	if res.Coupon != nil {
		out.Status = couponv1.Coupon_Status(res.Coupon.Status)
	}
	return out, nil
}

// LockCoupon is the TCC Try.
func (c *Coupons) LockCoupon(ctx context.Context, r *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	return c.runBranch(ctx, r, c.svc.Lock)
}

// ConsumeCoupon is the TCC Confirm.
func (c *Coupons) ConsumeCoupon(ctx context.Context, r *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	return c.runBranch(ctx, r, c.svc.Consume)
}

// UnlockCoupon is the TCC Cancel.
func (c *Coupons) UnlockCoupon(ctx context.Context, r *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	return c.runBranch(ctx, r, c.svc.Unlock)
}

// UseCoupon is the Saga action.
func (c *Coupons) UseCoupon(ctx context.Context, r *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	return c.runBranch(ctx, r, c.svc.Use)
}

// UseCouponRevert is the Saga compensation.
func (c *Coupons) UseCouponRevert(ctx context.Context, r *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	return c.runBranch(ctx, r, c.svc.Revert)
}

// ReturnCoupon gives back a coupon used by a refunded order; with DTM
// barrier metadata it runs behind the barrier (a 2-phase message's branch).
func (c *Coupons) ReturnCoupon(ctx context.Context, r *couponv1.ReturnCouponRequest) (*couponv1.ReturnCouponResponse, error) {
	var br participant.Branch
	if bb, err := dtmgrpc.BarrierFromGrpc(ctx); err == nil {
		br = participant.Branch{TransType: bb.TransType, GID: bb.Gid, BranchID: bb.BranchID, Op: bb.Op}
	}
	res, err := c.svc.Return(ctx, br, participant.ReturnRequest{
		RequestID: r.GetRequestId(), UserID: r.GetUserId(), Code: r.GetCouponCode(), OrderNo: r.GetOrderNo(), Reason: r.GetReason(),
	})
	if err != nil {
		return nil, err
	}
	out := &couponv1.ReturnCouponResponse{Replayed: res.Replayed}
	if res.Coupon != nil {
		out.Coupon = couponPB(res.Coupon)
	}
	return out, nil
}
