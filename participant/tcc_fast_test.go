package participant_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
)

// step is one DTM branch call on one of the user's coupons.
type step struct {
	op     string // try, confirm, cancel (TCC); action, compensate (Saga)
	gid    string
	branch string // "01" when empty
	order  string
	coupon int   // index of the coupon named
	user   int64 // the coupon's owner when 0
	amount int64 // 10000 when 0
	// wantCode and wantReason are the answer; "" is OK.
	wantCode   participant.Code
	wantReason string
	// wantDiscount is the discount answered when the call succeeds (-1: not checked).
	wantDiscount int64
}

const fastUser = 7

func (e *fastEnv) branch(s step, coupons []*participant.Coupon) (participant.BranchResult, error) {
	user := s.user
	if user == 0 {
		user = fastUser
	}
	amount := s.amount
	if amount == 0 {
		amount = 10000
	}
	branchID := s.branch
	if branchID == "" {
		branchID = "01"
	}
	r := participant.BranchRequest{UserID: user, Code: coupons[s.coupon].Code,
		Order: participant.Order{OrderNo: s.order, UserID: user, Amount: amount, Currency: "CNY"}}
	trans := "tcc"
	var call func(context.Context, participant.Branch, participant.BranchRequest) (participant.BranchResult, error)
	switch s.op {
	case "try":
		call = e.svc.Lock
	case "confirm":
		call = e.svc.Consume
	case "cancel":
		call = e.svc.Unlock
	case "action":
		trans, call = "saga", e.svc.Use
	case "compensate":
		trans, call = "saga", e.svc.Revert
	default:
		e.t.Fatalf("unknown op %q", s.op)
	}
	return call(e.t.Context(), participant.Branch{TransType: trans, GID: s.gid, BranchID: branchID, Op: s.op}, r)
}

func TestFastBranches(t *testing.T) {
	tests := []struct {
		name     string
		template func(*participant.Template)
		coupons  int // claimed for the user before the steps; 1 when 0
		advance  time.Duration
		steps    []step
		// The first coupon as stored at the end.
		wantStatus participant.CouponStatus
		wantGID    string
		wantOrder  string
		wantLedger []string
		// wantUses is the template's daily-use count of the user today.
		wantUses int32
		// wantConfirmWithoutLock is the count of Confirms that found no lock.
		wantConfirmWithoutLock int64
	}{
		{
			name:       "lock then consume",
			steps:      []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500}, {op: "confirm", gid: "g1", order: "o1", wantDiscount: 500}},
			wantStatus: participant.CouponUsed, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK", "CONSUME"}, wantUses: 1,
		},
		{
			name:       "lock twice by the same branch is one lock",
			steps:      []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500}, {op: "try", gid: "g1", order: "o1", wantDiscount: 500}},
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 1,
		},
		{
			name: "another branch of the same transaction finds it locked",
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500},
				{op: "try", gid: "g1", branch: "02", order: "o1", wantDiscount: 500}},
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 1,
		},
		{
			name: "lock by another transaction is refused",
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500},
				{op: "try", gid: "g2", order: "o1", wantCode: participant.EABORTED, wantReason: participant.ReasonCouponNotAvailable}},
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 1,
		},
		{
			name: "lock for another order is refused",
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500},
				{op: "try", gid: "g2", order: "o2", wantCode: participant.EABORTED, wantReason: participant.ReasonCouponNotAvailable}},
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 1,
		},
		{
			name: "a repeated Try must get the locked discount",
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500},
				{op: "try", gid: "g1", order: "o1", amount: 300, wantCode: participant.EABORTED, wantReason: participant.ReasonCouponNotAvailable}},
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 1,
		},
		{
			name:       "unlock by the owning transaction",
			steps:      []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500}, {op: "cancel", gid: "g1", order: "o1", wantDiscount: -1}},
			wantStatus: participant.CouponAvailable, wantLedger: []string{"LOCK", "RELEASE"}, wantUses: 0,
		},
		{
			name: "unlock twice releases once",
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500}, {op: "cancel", gid: "g1", order: "o1", wantDiscount: -1},
				{op: "cancel", gid: "g1", order: "o1", wantDiscount: -1}},
			wantStatus: participant.CouponAvailable, wantLedger: []string{"LOCK", "RELEASE"}, wantUses: 0,
		},
		{
			name: "unlock by a foreign transaction does nothing",
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500},
				{op: "cancel", gid: "g2", order: "o1", wantDiscount: -1}},
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 1,
		},
		{
			// g2's Try ran (on another coupon), so its Cancel is no null
			// compensation: the coupon's lock is looked at and left.
			name: "unlock by a transaction that locked another coupon leaves this one",
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500},
				{op: "try", gid: "g2", order: "o1", coupon: 1, wantDiscount: 500},
				{op: "cancel", gid: "g2", order: "o1", wantDiscount: -1}},
			coupons:    2,
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 2,
		},
		{
			name: "a Try after its Cancel (hanging) is refused",
			steps: []step{{op: "cancel", gid: "g1", order: "o1", wantDiscount: -1},
				{op: "try", gid: "g1", order: "o1", wantCode: participant.EABORTED, wantReason: participant.ReasonCouponNotAvailable}},
			wantStatus: participant.CouponAvailable,
		},
		{
			name:                   "consume without a lock changes nothing and is counted",
			steps:                  []step{{op: "confirm", gid: "g1", order: "o1", wantDiscount: -1}},
			wantStatus:             participant.CouponAvailable,
			wantConfirmWithoutLock: 1,
		},
		{
			name: "consume by a foreign transaction leaves the lock",
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500},
				{op: "confirm", gid: "g2", order: "o1", wantDiscount: -1}},
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 1,
			wantConfirmWithoutLock: 1,
		},
		{
			name:       "lock of an expired, unswept coupon",
			template:   func(t *participant.Template) { t.ValidUntil = fastStart.Add(time.Hour) },
			advance:    2 * time.Hour,
			steps:      []step{{op: "try", gid: "g1", order: "o1", wantCode: participant.EABORTED, wantReason: participant.ReasonCouponExpired}},
			wantStatus: participant.CouponAvailable,
		},
		{
			name:       "lock of another user's coupon is not found",
			steps:      []step{{op: "try", gid: "g1", order: "o1", user: 8, wantCode: participant.EABORTED, wantReason: participant.ReasonCouponNotFound}},
			wantStatus: participant.CouponAvailable,
		},
		{
			name:       "lock without barrier metadata",
			steps:      []step{{op: "try", gid: "", order: "o1", wantCode: participant.EINVALID, wantReason: participant.ReasonMissingBarrier}},
			wantStatus: participant.CouponAvailable,
		},
		{
			name:       "lock of a malformed order is aborted, not invalid",
			steps:      []step{{op: "try", gid: "g1", order: "", wantCode: participant.EABORTED, wantReason: participant.ReasonInvalidArgument}},
			wantStatus: participant.CouponAvailable,
		},
		{
			name:     "daily use limit",
			template: func(t *participant.Template) { t.DailyUseLimit = 1 },
			coupons:  2,
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500},
				{op: "try", gid: "g2", order: "o2", coupon: 1, wantCode: participant.EABORTED, wantReason: participant.ReasonDailyUseLimitReached}},
			wantStatus: participant.CouponLocked, wantGID: "g1", wantOrder: "o1", wantLedger: []string{"LOCK"}, wantUses: 1,
		},
		{
			name:     "daily use given back by a cancel",
			template: func(t *participant.Template) { t.DailyUseLimit = 1 },
			coupons:  2,
			steps: []step{{op: "try", gid: "g1", order: "o1", wantDiscount: 500}, {op: "cancel", gid: "g1", order: "o1", wantDiscount: -1},
				{op: "try", gid: "g2", order: "o2", coupon: 1, wantDiscount: 500}},
			wantStatus: participant.CouponAvailable, wantLedger: []string{"LOCK", "RELEASE"}, wantUses: 1,
		},
		{
			name:       "saga use",
			steps:      []step{{op: "action", gid: "s1", order: "o1", wantDiscount: 500}},
			wantStatus: participant.CouponUsed, wantGID: "s1", wantOrder: "o1", wantLedger: []string{"LOCK", "CONSUME"}, wantUses: 1,
		},
		{
			name:       "saga use then revert",
			steps:      []step{{op: "action", gid: "s1", order: "o1", wantDiscount: 500}, {op: "compensate", gid: "s1", order: "o1", wantDiscount: -1}},
			wantStatus: participant.CouponAvailable, wantLedger: []string{"LOCK", "CONSUME", "RELEASE"}, wantUses: 0,
		},
		{
			name: "saga use by another transaction is refused",
			steps: []step{{op: "action", gid: "s1", order: "o1", wantDiscount: 500},
				{op: "action", gid: "s2", order: "o1", wantCode: participant.EABORTED, wantReason: participant.ReasonCouponNotAvailable}},
			wantStatus: participant.CouponUsed, wantGID: "s1", wantOrder: "o1", wantLedger: []string{"LOCK", "CONSUME"}, wantUses: 1,
		},
		{
			name: "saga revert by another transaction does nothing",
			steps: []step{{op: "action", gid: "s1", order: "o1", wantDiscount: 500},
				{op: "action", gid: "s2", order: "o1", coupon: 1, wantDiscount: 500},
				{op: "compensate", gid: "s2", order: "o1", wantDiscount: -1}},
			coupons:    2,
			wantStatus: participant.CouponUsed, wantGID: "s1", wantOrder: "o1", wantLedger: []string{"LOCK", "CONSUME"}, wantUses: 2,
		},
		{
			name:       "saga revert without its action (null compensation)",
			steps:      []step{{op: "compensate", gid: "s1", order: "o1", wantDiscount: -1}},
			wantStatus: participant.CouponAvailable,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFast(t)
			tpl := e.template(tc.template)
			var coupons []*participant.Coupon
			for i := range max(tc.coupons, 1) {
				coupons = append(coupons, e.claim(tpl.ID, fastUser, "claim-"+string(rune('a'+i))))
			}
			e.clock.Advance(tc.advance)
			for i, s := range tc.steps {
				res, err := e.branch(s, coupons)
				wantError(t, s.op+" "+s.gid, err, s.wantCode, s.wantReason)
				if err == nil && s.wantDiscount >= 0 && res.Discount != s.wantDiscount {
					t.Errorf("step %d (%s %s): discount %d, want %d", i, s.op, s.gid, res.Discount, s.wantDiscount)
				}
			}
			c := e.stored(fastUser, coupons[0].Code)
			if c.Status != tc.wantStatus || c.LockGID != tc.wantGID || c.OrderNo != tc.wantOrder {
				t.Errorf("coupon is %s by %q for %q, want %s by %q for %q", c.Status, c.LockGID, c.OrderNo, tc.wantStatus, tc.wantGID, tc.wantOrder)
			}
			ledger, err := e.ports.Coupons.Ledger(t.Context(), fastUser, []int64{c.ID})
			if err != nil {
				t.Fatal(err)
			}
			var ops []string
			for _, l := range ledger {
				ops = append(ops, l.Op)
			}
			if !slices.Equal(ops, tc.wantLedger) {
				t.Errorf("ledger = %v, want %v", ops, tc.wantLedger)
			}
			day := e.clock.Now().UTC().Format(time.DateOnly)
			if got := e.ports.Branches.DailyUse(fastUser, day, tpl.ID); got != tc.wantUses {
				t.Errorf("daily uses of the template = %d, want %d", got, tc.wantUses)
			}
			if got := e.svc.Stats().ConfirmWithoutLock; got != tc.wantConfirmWithoutLock {
				t.Errorf("confirms without a lock = %d, want %d", got, tc.wantConfirmWithoutLock)
			}
		})
	}
}
