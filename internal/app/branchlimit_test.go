package app_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestBranchCallsRateLimited: every branch method is rate limited per
// identity, so an order-role caller cannot write barrier rows without
// bound by inventing gids. Past its budget a Try is refused RATE_LIMITED
// (ResourceExhausted, with a RetryInfo); Confirm, Cancel, the Saga
// compensation and the return branch answer Unavailable, which DTM
// retries, never a refusal. Refused calls write no barrier row, and
// another order service keeps its own budget. It runs with the branch
// limit (ratelimit.branch_rps) and with an order-role entry in its place.
func TestBranchCallsRateLimited(t *testing.T) {
	const budget = 3
	for _, tc := range []struct {
		name  string
		limit app.RateLimit
	}{
		{"branch limit", app.RateLimit{Branch: 0.001, BranchBurst: budget}},
		{"order role's limit", app.RateLimit{Limits: []app.Limit{{Role: auth.RoleOrder, RPS: 0.001, Burst: budget}}}},
	} {
		t.Run(tc.name, func(t *testing.T) { testBranchLimit(t, tc.limit, budget) })
	}
}

func testBranchLimit(t *testing.T, limit app.RateLimit, budget int) {
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Auth.Callers = append(c.Auth.Callers, auth.Caller{Identity: "shop-b", Roles: []string{auth.RoleOrder}, TokenSHA256: auth.HashToken("shop-b-token")})
		c.RateLimit = limit
	})
	ctx := ctxT(t)
	tpl := template(t, srv, 10)
	const user = 77
	c := claim(t, srv, tpl.Id, user)
	shop, shopB := srv.CouponsAs(coupontest.TokenShop), srv.CouponsAs("shop-b-token")
	barrierRows := func(gid string) int {
		t.Helper()
		var n int
		db, _ := srv.App.Store().UserShardForTest(user)
		if err := db.QueryRowContext(ctx,
			"SELECT COUNT(*) FROM "+couponmysql.BarrierTable+" WHERE gid = ?", gid).Scan(&n); err != nil {
			t.Fatalf("count barrier rows of %s: %v", gid, err)
		}
		return n
	}
	branchCtx := func(gid, transType, op string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "dtm-gid", gid, "dtm-trans_type", transType, "dtm-branch_id", "01", "dtm-op", op)
	}
	req := func(order string) *couponv1.CouponBranchRequest {
		return &couponv1.CouponBranchRequest{UserId: user, CouponCode: c.Code, Order: &couponv1.Order{OrderNo: order, UserId: user, Amount: 9000}}
	}
	limited := func(err error) bool {
		code := status.Code(err)
		return code == codes.ResourceExhausted || code == codes.Unavailable
	}

	t.Run("Try with fresh gids", func(t *testing.T) {
		for i := range 10 {
			gid := fmt.Sprintf("hammer-try-%d", i)
			_, err := shop.LockCoupon(branchCtx(gid, "tcc", "try"), req("o-"+gid))
			if i < budget {
				if limited(err) {
					t.Fatalf("Try %d within the budget: %v, want it served", i, err)
				}
				continue
			}
			wantRefused(t, fmt.Sprintf("Try %d past the budget", i), err, codes.ResourceExhausted, "RATE_LIMITED")
			if !hasRetryInfo(err) {
				t.Fatalf("Try %d refused without a RetryInfo: %v", i, err)
			}
			if n := barrierRows(gid); n != 0 {
				t.Fatalf("refused Try %s wrote %d barrier rows", gid, n)
			}
		}
		if n := barrierRows("hammer-try-0"); n != 1 {
			t.Fatalf("the Try that locked the coupon has %d barrier rows, want 1", n)
		}
	})

	// Each compensation with fresh gids: a Cancel or a Saga compensation
	// that finds no Try writes its barrier rows (null compensation) and
	// answers OK; past the budget it answers Unavailable and writes none.
	compensations := []struct {
		name       string
		call       func(gid string) error
		writesRows bool
	}{
		{"UnlockCoupon (Cancel)", func(gid string) error {
			_, err := shop.UnlockCoupon(branchCtx(gid, "tcc", "cancel"), req("o-"+gid))
			return err
		}, true},
		{"ConsumeCoupon (Confirm)", func(gid string) error {
			_, err := shop.ConsumeCoupon(branchCtx(gid, "tcc", "confirm"), req("o-"+gid))
			return err
		}, false},
		{"UseCouponRevert (Saga compensation)", func(gid string) error {
			_, err := shop.UseCouponRevert(branchCtx(gid, "saga", "compensate"), req("o-"+gid))
			return err
		}, true},
		{"ReturnCoupon (message branch)", func(gid string) error {
			_, err := shop.ReturnCoupon(branchCtx(gid, "msg", "action"), &couponv1.ReturnCouponRequest{
				RequestId: "ret-" + gid, UserId: user, CouponCode: c.Code, OrderNo: "o-" + gid, Reason: "refund"})
			return err
		}, true},
	}
	for _, m := range compensations {
		t.Run(m.name, func(t *testing.T) {
			for i := range budget + 3 {
				gid := fmt.Sprintf("hammer-%s-%d", m.name[:6], i)
				err := m.call(gid)
				if i < budget {
					if err != nil {
						t.Fatalf("call %d within the budget: %v, want OK", i, err)
					}
					if m.writesRows && barrierRows(gid) == 0 {
						t.Fatalf("call %d within the budget wrote no barrier row; the check below would prove nothing", i)
					}
					continue
				}
				wantRefused(t, fmt.Sprintf("call %d past the budget", i), err, codes.Unavailable, "RATE_LIMITED")
				if n := barrierRows(gid); n != 0 {
					t.Fatalf("refused call %s wrote %d barrier rows", gid, n)
				}
			}
		})
	}

	t.Run("another identity keeps its budget", func(t *testing.T) {
		_, err := shopB.LockCoupon(branchCtx("other-try", "tcc", "try"), req("o-other"))
		wantRefused(t, "shop-b's Try of a coupon locked by another transaction", err, codes.Aborted, "COUPON_NOT_AVAILABLE")
		if _, err := shopB.UnlockCoupon(branchCtx("other-cancel", "tcc", "cancel"), req("o-other-cancel")); err != nil {
			t.Fatalf("shop-b's Cancel: %v, want OK", err)
		}
		if n := barrierRows("other-cancel"); n != 2 {
			t.Fatalf("shop-b's Cancel wrote %d barrier rows, want 2 (Try and Cancel of a null compensation)", n)
		}
	})
}

func hasRetryInfo(err error) bool {
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok && r.GetRetryDelay().AsDuration() > 0 {
			return true
		}
	}
	return false
}
