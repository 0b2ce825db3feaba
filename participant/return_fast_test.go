package participant_test

import (
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
)

func TestFastReturn(t *testing.T) {
	ret := func(req, order string) participant.ReturnRequest {
		return participant.ReturnRequest{RequestID: req, UserID: fastUser, OrderNo: order, Reason: "refunded"}
	}
	tests := []struct {
		name     string
		template func(*participant.Template)
		// before are branch calls on the coupon before the returns.
		before  []step
		advance time.Duration
		// returns are made in turn; all but the last must succeed.
		returns      []participant.ReturnRequest
		user         int64 // who returns the last; the coupon's owner when 0
		asBranch     bool  // the last return is a DTM message branch
		wantCode     participant.Code
		wantReason   string
		wantReplayed bool
		wantStatus   participant.CouponStatus // stored at the end
	}{
		{
			name:       "used coupon comes back",
			before:     []step{{op: "try", gid: "g1", order: "o1"}, {op: "confirm", gid: "g1", order: "o1"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			wantStatus: participant.CouponAvailable,
		},
		{
			name:         "replay of the same request id",
			before:       []step{{op: "try", gid: "g1", order: "o1"}, {op: "confirm", gid: "g1", order: "o1"}},
			returns:      []participant.ReturnRequest{ret("ret-1", "o1"), ret("ret-1", "o1")},
			wantReplayed: true,
			wantStatus:   participant.CouponAvailable,
		},
		{
			name:       "a saga use comes back",
			before:     []step{{op: "action", gid: "s1", order: "o1"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			wantStatus: participant.CouponAvailable,
		},
		{
			name:       "past its expiry it comes back expired",
			template:   func(t *participant.Template) { t.ValidUntil = fastStart.Add(time.Hour) },
			before:     []step{{op: "try", gid: "g1", order: "o1"}, {op: "confirm", gid: "g1", order: "o1"}},
			advance:    2 * time.Hour,
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			wantStatus: participant.CouponExpired,
		},
		{
			name:       "locked for the same order waits for its Confirm",
			before:     []step{{op: "try", gid: "g1", order: "o1"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			wantCode:   participant.EREFUSED,
			wantReason: participant.ReasonCouponLockedPendingConfirm,
			wantStatus: participant.CouponLocked,
		},
		{
			name:       "locked for the same order waits, as a branch too",
			before:     []step{{op: "try", gid: "g1", order: "o1"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			asBranch:   true,
			wantCode:   participant.EREFUSED,
			wantReason: participant.ReasonCouponLockedPendingConfirm,
			wantStatus: participant.CouponLocked,
		},
		{
			name:       "locked for another order is not this order's",
			before:     []step{{op: "try", gid: "g1", order: "o2"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			wantCode:   participant.EREFUSED,
			wantReason: participant.ReasonCouponNotReturnable,
			wantStatus: participant.CouponLocked,
		},
		{
			name:       "used by another order",
			before:     []step{{op: "try", gid: "g1", order: "o2"}, {op: "confirm", gid: "g1", order: "o2"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			wantCode:   participant.EREFUSED,
			wantReason: participant.ReasonCouponNotReturnable,
			wantStatus: participant.CouponUsed,
		},
		{
			name:       "never used",
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			wantCode:   participant.EREFUSED,
			wantReason: participant.ReasonCouponNotReturnable,
			wantStatus: participant.CouponAvailable,
		},
		{
			name:       "template that does not return its coupons",
			template:   func(t *participant.Template) { t.Returnable = false },
			before:     []step{{op: "try", gid: "g1", order: "o1"}, {op: "confirm", gid: "g1", order: "o1"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			wantCode:   participant.EREFUSED,
			wantReason: participant.ReasonCouponNotReturnable,
			wantStatus: participant.CouponUsed,
		},
		{
			name:       "not returnable answers OK as a branch, which must complete",
			template:   func(t *participant.Template) { t.Returnable = false },
			before:     []step{{op: "try", gid: "g1", order: "o1"}, {op: "confirm", gid: "g1", order: "o1"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			asBranch:   true,
			wantStatus: participant.CouponUsed,
		},
		{
			name:       "another user's coupon is not found",
			before:     []step{{op: "try", gid: "g1", order: "o1"}, {op: "confirm", gid: "g1", order: "o1"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1")},
			user:       8,
			wantCode:   participant.ENOTFOUND,
			wantReason: participant.ReasonCouponNotFound,
			wantStatus: participant.CouponUsed,
		},
		{
			name:       "the request id of a return of another order",
			before:     []step{{op: "try", gid: "g1", order: "o1"}, {op: "confirm", gid: "g1", order: "o1"}},
			returns:    []participant.ReturnRequest{ret("ret-1", "o1"), ret("ret-1", "o2")},
			wantCode:   participant.EREFUSED,
			wantReason: participant.ReasonRequestIDConflict,
			wantStatus: participant.CouponAvailable,
		},
		{
			name:       "missing request id",
			returns:    []participant.ReturnRequest{ret("", "o1")},
			wantCode:   participant.EINVALID,
			wantReason: participant.ReasonInvalidArgument,
			wantStatus: participant.CouponAvailable,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFast(t)
			tpl := e.template(func(t *participant.Template) {
				t.Returnable = true
				if tc.template != nil {
					tc.template(t)
				}
			})
			coupons := []*participant.Coupon{e.claim(tpl.ID, fastUser, "claim-a")}
			for _, s := range tc.before {
				if _, err := e.branch(s, coupons); err != nil {
					t.Fatalf("%s %s: %v", s.op, s.gid, err)
				}
			}
			e.clock.Advance(tc.advance)
			var res participant.ReturnResult
			var err error
			for i, r := range tc.returns {
				r.Code = coupons[0].Code
				var br participant.Branch
				if i == len(tc.returns)-1 {
					if tc.user != 0 {
						r.UserID = tc.user
					}
					if tc.asBranch {
						br = participant.Branch{TransType: "msg", GID: "refund-1", BranchID: "01", Op: "action"}
					}
				}
				res, err = e.svc.Return(t.Context(), br, r)
				if i < len(tc.returns)-1 && err != nil {
					t.Fatalf("return %d: %v", i, err)
				}
			}
			wantError(t, "last return", err, tc.wantCode, tc.wantReason)
			if err == nil && res.Replayed != tc.wantReplayed {
				t.Errorf("replayed = %v, want %v", res.Replayed, tc.wantReplayed)
			}
			if err == nil && tc.wantCode == "" && !tc.asBranch && (res.Coupon == nil || res.Coupon.Status != tc.wantStatus) {
				t.Errorf("answered coupon %+v, want one %s", res.Coupon, tc.wantStatus)
			}
			if c := e.stored(fastUser, coupons[0].Code); c.Status != tc.wantStatus {
				t.Errorf("stored coupon is %s, want %s", c.Status, tc.wantStatus)
			}
		})
	}
}

// TestFastReturnAfterConfirm: the return that waited for the coupon's
// Confirm succeeds once it ran, with the same request ID.
func TestFastReturnAfterConfirm(t *testing.T) {
	e := newFast(t)
	tpl := e.template(func(t *participant.Template) { t.Returnable = true })
	coupons := []*participant.Coupon{e.claim(tpl.ID, fastUser, "claim-a")}
	if _, err := e.branch(step{op: "try", gid: "g1", order: "o1"}, coupons); err != nil {
		t.Fatal(err)
	}
	r := participant.ReturnRequest{RequestID: "ret-1", UserID: fastUser, Code: coupons[0].Code, OrderNo: "o1"}
	br := participant.Branch{TransType: "msg", GID: "refund-1", BranchID: "01", Op: "action"}
	_, err := e.svc.Return(t.Context(), br, r)
	wantError(t, "return before the Confirm", err, participant.EREFUSED, participant.ReasonCouponLockedPendingConfirm)
	if _, err := e.branch(step{op: "confirm", gid: "g1", order: "o1"}, coupons); err != nil {
		t.Fatal(err)
	}
	// DTM retries the same branch: the refusal rolled its barrier row back.
	res, err := e.svc.Return(t.Context(), br, r)
	wantError(t, "return after the Confirm", err, "", "")
	if res.Coupon == nil || res.Coupon.Status != participant.CouponAvailable || res.Replayed {
		t.Fatalf("return = %+v, want the coupon AVAILABLE, not replayed", res)
	}
	// A duplicate of the branch is skipped and reports the return made.
	res, err = e.svc.Return(t.Context(), br, r)
	wantError(t, "duplicate return branch", err, "", "")
	if !res.Replayed {
		t.Errorf("duplicate branch: replayed = false, want true")
	}
}
