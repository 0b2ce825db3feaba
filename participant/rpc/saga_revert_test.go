package rpc_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestSagaRevertReleasesOnlyItsOwnUse: a compensation gives back only a use
// made by its own saga, even for the same order. TestSagaBranches' "other
// saga's compensation" never reaches that check: the other saga's action
// was refused, so the barrier skips its compensation as a null one. Here
// the compensating saga's action did run (on another coupon of the user,
// so its barrier row exists and the compensation is not skipped), and its
// payload names the coupon another saga used for the same order number: the
// gid is all that tells the two uses apart.
func TestSagaRevertReleasesOnlyItsOwnUse(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	cl := e.srv.Coupons
	saga := func(gid, op string) context.Context {
		return metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", gid, "dtm-trans_type", "saga", "dtm-branch_id", "01", "dtm-op", op)
	}
	mine, theirs := e.claim(t, tpl.Id, 501), e.claim(t, tpl.Id, 501)
	if _, err := cl.UseCoupon(saga("s-mine", "action"), branchReq(501, mine.Code, "o-shared")); err != nil {
		t.Fatalf("s-mine's action: %v", err)
	}
	if _, err := cl.UseCoupon(saga("s-theirs", "action"), branchReq(501, theirs.Code, "o-shared")); err != nil {
		t.Fatalf("s-theirs's action: %v", err)
	}
	// s-mine's compensation, its action having run, names s-theirs's coupon.
	if _, err := cl.UseCouponRevert(saga("s-mine", "compensate"), branchReq(501, theirs.Code, "o-shared")); err != nil {
		t.Fatalf("compensation naming another saga's use: %v, want OK", err)
	}
	got := e.waitStatus(t, 501, theirs.Code, couponv1.Coupon_USED)
	if got.Gid != "s-theirs" || got.OrderNo != "o-shared" {
		t.Fatalf("coupon = %v; want USED by s-theirs for o-shared", got)
	}
	if l := e.ledger(t, 501, theirs.Code); l["RELEASE"] != 0 {
		t.Fatalf("ledger = %v; want no RELEASE of s-theirs's use", l)
	}
	if uses := e.dailyUses(t, 501, tpl.Id); uses != 2 {
		t.Fatalf("daily uses = %d; want 2 (neither use given back)", uses)
	}
	// Its own compensation still gives it back.
	if _, err := cl.UseCouponRevert(saga("s-theirs", "compensate"), branchReq(501, theirs.Code, "o-shared")); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, 501, theirs.Code, couponv1.Coupon_AVAILABLE)
}
