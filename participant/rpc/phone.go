package rpc

import (
	"context"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// ClaimCouponByPhone claims for a phone number, idempotently on request_id.
// The coupon has no user_id until the phone is bound.
func (c *Coupons) ClaimCouponByPhone(ctx context.Context, r *couponv1.ClaimCouponByPhoneRequest) (*couponv1.Coupon, error) {
	x, err := c.svc.ClaimByPhone(ctx, participant.PhoneClaimRequest{RequestID: r.RequestId, Phone: r.Phone, TemplateID: r.TemplateId})
	if err != nil {
		return nil, err
	}
	return couponPB(x), nil
}

// BindPhone binds the phone to the user and returns the coupons it moved.
func (c *Coupons) BindPhone(ctx context.Context, r *couponv1.BindPhoneRequest) (*couponv1.BindPhoneResponse, error) {
	cs, err := c.svc.BindPhone(ctx, r.UserId, r.Phone)
	if err != nil {
		return nil, err
	}
	return &couponv1.BindPhoneResponse{Coupons: couponsPB(cs)}, nil
}
