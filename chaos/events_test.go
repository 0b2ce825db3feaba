package chaos

import (
	"slices"
	"testing"

	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/participant"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
)

// TestCheckEvents feeds invariant 7's checker streams with one fault each
// and expects exactly the coupons at fault reported; a resend (the same
// event ID again) and events of other scenarios' templates are not faults.
func TestCheckEvents(t *testing.T) {
	const tpl = 11
	// ev is coupon code's event seq as the relay publishes it.
	ev := func(code string, seq int64) streamEvent {
		id := participant.EventID(code, seq)
		return streamEvent{Subject: relay.DefaultSubjectPrefix + "coupon.locked", MsgID: id, Event: &couponeventsv1.Event{
			Id: id, Type: "coupon.locked", CouponCode: code, TemplateId: tpl, Sequence: seq}}
	}
	withID := func(e streamEvent, id string) streamEvent {
		e.MsgID, e.Event.Id = id, id
		return e
	}
	ofTemplate := func(e streamEvent, t int64) streamEvent {
		e.Event.TemplateId = t
		return e
	}
	templateEvent := streamEvent{Subject: relay.DefaultSubjectPrefix + "template.changed", MsgID: "template-11.v2",
		Event: &couponeventsv1.Event{Id: "template-11.v2", Type: "template.changed", TemplateId: tpl, TemplateVersion: 2}}
	coupons := map[string]int64{"A": 3, "B": 1}
	tests := []struct {
		name string
		evs  []streamEvent
		want []string // first offending ids; none: the invariant holds
	}{
		{"every event once, in order", []streamEvent{templateEvent, ev("A", 1), ev("B", 1), ev("A", 2), ev("A", 3)}, nil},
		{"a resend past JetStream's window is dropped by ID", []streamEvent{ev("A", 1), ev("A", 2), ev("B", 1), ev("A", 2), ev("A", 3), ev("A", 1)}, nil},
		{"another scenario's coupon is not judged", []streamEvent{ev("A", 1), ev("A", 2), ev("A", 3), ev("B", 1), ofTemplate(ev("Q", 4), 99)}, nil},
		{"a missing event", []streamEvent{ev("A", 1), ev("A", 3), ev("B", 1)}, []string{"A"}},
		{"no events at all", []streamEvent{ev("A", 1), ev("A", 2), ev("A", 3)}, []string{"B"}},
		{"a duplicate beyond dedup: one sequence under two IDs", []streamEvent{ev("A", 1), ev("A", 2), withID(ev("A", 2), "A.2-again"), ev("A", 3), ev("B", 1)}, []string{"A"}},
		{"an out-of-order pair", []streamEvent{ev("A", 1), ev("A", 3), ev("A", 2), ev("B", 1)}, []string{"A"}},
		{"an event beyond event_seq", []streamEvent{ev("A", 1), ev("A", 2), ev("A", 3), ev("B", 1), ev("B", 2)}, []string{"B"}},
		{"an event of a coupon that does not exist", []streamEvent{ev("A", 1), ev("A", 2), ev("A", 3), ev("B", 1), ev("Z", 1)}, []string{"Z"}},
		{"a message whose Nats-Msg-Id is not its event's", []streamEvent{ev("A", 1), ev("A", 2), ev("A", 3), func() streamEvent {
			e := ev("B", 1)
			e.MsgID = "B.7"
			return e
		}()}, []string{"B.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerdict()
			resends := checkEvents(v, []int64{tpl}, coupons, tt.evs)
			if want := len(tt.evs) - len(distinctIDs(tt.evs)); resends != want {
				t.Errorf("got %d resends, want %d", resends, want)
			}
			got := v.inv[eventsInvariant]
			if !slices.Equal(got.First, tt.want) {
				t.Errorf("first offending: got %v (%v), want %v", got.First, got.Details, tt.want)
			}
			want := held
			if len(tt.want) > 0 {
				want = violated
			}
			if got.Status != want || got.Violations != len(tt.want) {
				t.Errorf("got %s with %d violations, want %s with %d", got.Status, got.Violations, want, len(tt.want))
			}
		})
	}
}

func distinctIDs(evs []streamEvent) map[string]bool {
	out := map[string]bool{}
	for _, e := range evs {
		out[e.Event.GetId()] = true
	}
	return out
}

func TestSequenceProblems(t *testing.T) {
	tests := []struct {
		got  []int64
		n    int64
		want int // problems found
	}{
		{[]int64{1, 2, 3}, 3, 0},
		{nil, 0, 0},
		{nil, 2, 1},                 // missing
		{[]int64{1, 2, 2}, 2, 1},    // twice
		{[]int64{2, 1}, 2, 1},       // out of order
		{[]int64{1, 2, 3}, 2, 1},    // beyond
		{[]int64{1, 4, 3}, 3, 3},    // missing 2, 4 beyond, 3 after 4
		{[]int64{0, 1}, 1, 1},       // outside
		{[]int64{1, 3, 3, 2}, 3, 2}, // twice, out of order
	}
	for _, tt := range tests {
		if got := sequenceProblems(tt.got, tt.n); len(got) != tt.want {
			t.Errorf("sequenceProblems(%v, %d) = %q, want %d problems", tt.got, tt.n, got, tt.want)
		}
	}
}
