package rpc_test

import (
	"testing"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestCancelNamingAnotherTransactionsCoupon: a transaction whose Try
// locked one coupon sends a Cancel whose payload names another coupon of
// the user, locked by a second transaction (a forged or corrupted
// payload). The barrier lets the Cancel through, since its own Try ran;
// the coupon it names is not its lock, so nothing is released.
func TestCancelNamingAnotherTransactionsCoupon(t *testing.T) {
	e := newTCC(t)
	tpl := e.template(t, 10, 0)
	cl := e.srv.Coupons
	held := e.claim(t, tpl.Id, 63)
	own := e.claim(t, tpl.Id, 63)
	if _, err := cl.LockCoupon(branchCtx(t, "g-holder", "try"), branchReq(63, held.Code, "o-holder")); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.LockCoupon(branchCtx(t, "g-forger", "try"), branchReq(63, own.Code, "o-forger")); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UnlockCoupon(branchCtx(t, "g-forger", "cancel"), branchReq(63, held.Code, "o-holder")); err != nil {
		t.Fatalf("cancel naming another transaction's coupon: %v, want OK", err)
	}
	got := e.waitStatus(t, 63, held.Code, couponv1.Coupon_LOCKED)
	if got.Gid != "g-holder" || got.OrderNo != "o-holder" {
		t.Fatalf("after the forged cancel the coupon is held by %s for %s, want g-holder for o-holder", got.Gid, got.OrderNo)
	}
	e.waitStatus(t, 63, own.Code, couponv1.Coupon_LOCKED)
}
