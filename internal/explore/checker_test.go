package explore_test

import (
	"slices"
	"testing"

	"github.com/opencoupon/coupon/participant"
)

// TestCheckerCatchesEachViolation: every check fails on the end state it
// guards against, and none fails on the good ends a schedule can reach.
func TestCheckerCatchesEachViolation(t *testing.T) {
	const (
		used      = participant.CouponUsed
		locked    = participant.CouponLocked
		available = participant.CouponAvailable
	)
	lock := func(order, gid string) ledgerRow { return ledgerRow{participant.OpLock, order, gid, 500} }
	consume := func(order, gid string) ledgerRow { return ledgerRow{participant.OpConsume, order, gid, 500} }
	release := func(order, gid string) ledgerRow { return ledgerRow{participant.OpRelease, order, gid, 500} }
	ret := func(order, gid string) ledgerRow { return ledgerRow{participant.OpReturn, order, gid, 500} }
	tcc1 := txnView{Name: "tcc1", GID: "g1", OrderNo: "o1", Started: true, Reserved: true, Committed: true, Finished: true}
	tcc2 := txnView{Name: "tcc2", GID: "g2", OrderNo: "o1", Started: true, Reserved: true, Committed: true, Finished: true}
	abortedTCC2 := txnView{Name: "tcc2", GID: "g2", OrderNo: "o1", Started: true, Finished: true}
	refunded := tcc1
	refunded.Refunded = true
	refund := txnView{Name: "refund", GID: "gr", OrderNo: "o1", Started: true, Finished: true}
	usedBy1 := snapshot{Status: used, OrderNo: "o1", GID: "g1", Discount: 500,
		Ledger: []ledgerRow{lock("o1", "g1"), consume("o1", "g1")}, DailyTemplate: 1, DailyAll: 1}
	returned := snapshot{Status: available, Ledger: []ledgerRow{lock("o1", "g1"), consume("o1", "g1"), ret("o1", "gr")}, DailyTemplate: 1, DailyAll: 1}

	for _, tc := range []struct {
		name string
		s    snapshot
		txns []txnView
		want []string
	}{
		{"one committed use", usedBy1, []txnView{tcc1, abortedTCC2}, nil},
		{"a refunded order's coupon returned", returned, []txnView{refunded, refund}, nil},
		{"nothing happened", snapshot{Status: available}, nil, nil},
		{"two committed payments with one coupon", usedBy1, []txnView{tcc1, tcc2}, []string{CheckOneUse}},
		{"a committed payment whose coupon was released", snapshot{Status: available,
			Ledger: []ledgerRow{lock("o1", "g1"), release("o1", "g1")}}, []txnView{tcc1}, []string{CheckOneUse}},
		{"used by an order that never committed", usedBy1, []txnView{{Name: "tcc1", GID: "g1", OrderNo: "o1", Started: true, Reserved: true, Finished: true}},
			[]string{CheckOneUse}},
		{"a refunded order's coupon still used", usedBy1, []txnView{refunded, refund}, []string{CheckRefundReturns}},
		{"a refunded order's coupon never returned", snapshot{Status: available,
			Ledger: []ledgerRow{lock("o1", "g1"), release("o1", "g1")}}, []txnView{refunded, refund}, []string{CheckRefundReturns}},
		{"a lock of a finished transaction", snapshot{Status: locked, OrderNo: "o1", GID: "g2", Discount: 500,
			Ledger: []ledgerRow{lock("o1", "g2")}, DailyTemplate: 1, DailyAll: 1}, []txnView{abortedTCC2}, []string{CheckNoFinishedLock}},
		{"a consume without its ledger row", snapshot{Status: used, OrderNo: "o1", GID: "g1", Discount: 500,
			Ledger: []ledgerRow{lock("o1", "g1")}, DailyTemplate: 1, DailyAll: 1}, []txnView{tcc1}, []string{CheckLedger}},
		{"a release by a transaction that held nothing", snapshot{Status: available,
			Ledger: []ledgerRow{lock("o1", "g1"), release("o1", "g2")}}, nil, []string{CheckLedger}},
		{"a use counted twice", snapshot{Status: used, OrderNo: "o1", GID: "g1", Discount: 500,
			Ledger: usedBy1.Ledger, DailyTemplate: 2, DailyAll: 2}, []txnView{tcc1}, []string{CheckDailyOnce}},
		{"a release that kept the day's use", snapshot{Status: available,
			Ledger: []ledgerRow{lock("o1", "g2"), release("o1", "g2")}, DailyTemplate: 1, DailyAll: 0}, []txnView{abortedTCC2}, []string{CheckDailyOnce}},
		{"a transaction that never finished", usedBy1, []txnView{tcc1, {Name: "refund", GID: "gr", OrderNo: "o1", Started: true}},
			[]string{CheckFinishes}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, v := range check(tc.s, tc.txns) {
				if !slices.Contains(got, v.Check) {
					got = append(got, v.Check)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("check = %v, want %v", check(tc.s, tc.txns), tc.want)
			}
		})
	}
}
