package shop

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/client/coupontcc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// couponClient is the shop's own connection to the coupon service, for the
// calls it makes directly rather than through DTM: the Saga's quote and the
// reads that name a refusal. It sends the shop's bearer token.
type couponClient struct {
	target, token string

	once   sync.Once
	conn   *grpc.ClientConn
	client couponv1.CouponServiceClient
	err    error
}

func newCouponClient(target, token string) *couponClient {
	return &couponClient{target: target, token: token}
}

// get connects on first use, so that a shop configured without a coupon
// service still serves orders without coupons.
func (c *couponClient) get() (couponv1.CouponServiceClient, error) {
	c.once.Do(func() {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if c.token != "" {
			opts = append(opts, grpc.WithUnaryInterceptor(bearer(c.token)))
		}
		c.conn, c.err = grpc.NewClient(c.target, opts...)
		if c.err == nil {
			c.client = couponv1.NewCouponServiceClient(c.conn)
		}
	})
	if c.err != nil {
		return nil, fmt.Errorf("coupon service %q: %w", c.target, c.err)
	}
	return c.client, nil
}

func (c *couponClient) close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

func bearer(token string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), method, req, reply, cc, opts...)
	}
}

// branchHeaders are the DTM branch headers of a global transaction of the
// shop using coupon (nil: none): a branch credential the coupon service
// accepts only on DTM's calls for gid and that coupon and order. The shop's
// token never goes into them: DTM shows branch headers to anyone who
// reaches its HTTP API.
func (s *OrderServer) branchHeaders(gid string, coupon *couponv1.CouponBranchRequest) (map[string]string, error) {
	if s.cfg.Token == "" || coupon == nil || coupon.GetCouponCode() == "" {
		return nil, nil
	}
	return coupontcc.BranchHeaders(s.cfg.Branch, gid, coupontcc.OrderOf(coupon))
}

// withToken makes the calls under ctx that go through DTM's client (the
// coupon's Try) carry the shop's own token.
func (s *OrderServer) withToken(ctx context.Context) context.Context {
	if s.cfg.Token == "" {
		return ctx
	}
	return coupontcc.WithToken(ctx, s.cfg.Token)
}

// quote asks the coupon service what the coupon would take off the order
// (ListApplicableCoupons). It returns nil when the coupon is not among the
// applicable ones.
func (s *OrderServer) quote(ctx context.Context, br *couponv1.CouponBranchRequest) (*couponv1.ApplicableCoupon, error) {
	c, err := s.coupons.get()
	if err != nil {
		return nil, err
	}
	resp, err := c.ListApplicableCoupons(ctx, &couponv1.ListApplicableCouponsRequest{UserId: br.GetUserId(), Order: br.GetOrder()})
	if err != nil {
		return nil, fmt.Errorf("quote coupon %s: %w", br.GetCouponCode(), err)
	}
	for _, a := range resp.GetCoupons() {
		if a.GetCoupon().GetCode() == br.GetCouponCode() {
			return a, nil
		}
	}
	return nil, nil
}

// couponRefusal names the reason the coupon service's action refuses, or
// refused, the coupon for the order, from what it reads now and in the
// order the action checks: the coupon's owner and status, its expiry, the
// template's rules, and last the daily-use limits, the one check a quote
// does not make. The Saga needs it because DTM gives a Saga's caller only
// the refusing branch's message, not its ErrorInfo reason. When requote is
// false the caller has just seen the coupon missing from a quote.
func (s *OrderServer) couponRefusal(ctx context.Context, br *couponv1.CouponBranchRequest, requote bool) (reason, message string, err error) {
	c, err := s.coupons.get()
	if err != nil {
		return "", "", err
	}
	cp, err := c.GetCoupon(ctx, &couponv1.GetCouponRequest{UserId: br.GetUserId(), CouponCode: br.GetCouponCode()})
	if err != nil {
		if st := status.Convert(err); st.Code() == codes.NotFound || st.Code() == codes.InvalidArgument || st.Code() == codes.PermissionDenied {
			return reasonOf(st, "NOT_FOUND"), st.Message(), nil
		}
		return "", "", fmt.Errorf("read coupon %s: %w", br.GetCouponCode(), err)
	}
	switch cp.GetStatus() {
	case couponv1.Coupon_AVAILABLE:
	case couponv1.Coupon_EXPIRED:
		return "COUPON_EXPIRED", "coupon " + cp.GetCode() + " has expired", nil
	default:
		return "COUPON_NOT_AVAILABLE", "coupon " + cp.GetCode() + " is " + cp.GetStatus().String(), nil
	}
	if requote {
		a, err := s.quote(ctx, br)
		if err != nil {
			return "", "", err
		}
		if a != nil {
			return "DAILY_USE_LIMIT_REACHED", "coupon " + cp.GetCode() + " applies to the order; the daily use limit refused it", nil
		}
	}
	return "RULE_NOT_MET", "coupon " + cp.GetCode() + " does not apply to this order", nil
}

// reasonOf is the ErrorInfo reason of st, or def when it carries none.
func reasonOf(st *status.Status, def string) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() != "" {
			return info.GetReason()
		}
	}
	return def
}
