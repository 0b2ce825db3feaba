package participant_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/opencoupon/coupon/participant"
)

// TestChangeEvents: a change reports one event per ledger row, in order,
// and coupon.expired when it leaves the coupon EXPIRED; every ledger op has
// an event type of its own.
func TestChangeEvents(t *testing.T) {
	types := func(ch participant.Change) []string {
		var out []string
		for _, e := range ch.Events() {
			out = append(out, e.Type)
		}
		return out
	}
	tests := []struct {
		name string
		ch   participant.Change
		want []string
	}{
		{"try", participant.Change{Status: participant.CouponLocked, Ledger: []participant.Entry{{Op: participant.OpLock}}},
			[]string{participant.EventLocked}},
		{"saga action", participant.Change{Status: participant.CouponUsed, Ledger: []participant.Entry{{Op: participant.OpLock}, {Op: participant.OpConsume}}},
			[]string{participant.EventLocked, participant.EventUsed}},
		{"cancel", participant.Change{Status: participant.CouponAvailable, Ledger: []participant.Entry{{Op: participant.OpRelease}}},
			[]string{participant.EventReleased}},
		{"cancel after expiry", participant.Change{Status: participant.CouponExpired, Ledger: []participant.Entry{{Op: participant.OpRelease}}},
			[]string{participant.EventReleased, participant.EventExpired}},
		{"return", participant.Change{Status: participant.CouponAvailable, Ledger: []participant.Entry{{Op: participant.OpReturn}}},
			[]string{participant.EventReturned}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, types(tt.ch)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
	known := map[string]bool{}
	for _, typ := range participant.EventTypes {
		known[typ] = true
	}
	for _, op := range []string{participant.OpLock, participant.OpConsume, participant.OpRelease, participant.OpReturn} {
		got := types(participant.Change{Ledger: []participant.Entry{{Op: op}}})
		if len(got) != 1 || !known[got[0]] || !strings.HasPrefix(got[0], "coupon.") {
			t.Errorf("ledger op %s reports %v, want one known coupon event", op, got)
		}
	}
}
