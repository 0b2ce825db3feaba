package participant

import (
	"fmt"
	"strings"
)

// Lifecycle event types (proto/coupon/events/v1). A coupon's events are
// written in the same local transaction as the change they report (the
// transactional outbox) and numbered per coupon: the claim is event 1.
const (
	EventClaimed         = "coupon.claimed"
	EventLocked          = "coupon.locked"
	EventUsed            = "coupon.used"
	EventReleased        = "coupon.released"
	EventReturned        = "coupon.returned"
	EventExpired         = "coupon.expired"
	EventTemplateChanged = "template.changed"
	EventStockAdded      = "stock.added"
)

// EventTypes lists every event type, in the order above.
var EventTypes = []string{EventClaimed, EventLocked, EventUsed, EventReleased, EventReturned,
	EventExpired, EventTemplateChanged, EventStockAdded}

// eventOfOp is the event each ledger operation reports.
var eventOfOp = map[string]string{
	OpLock:    EventLocked,
	OpConsume: EventUsed,
	OpRelease: EventReleased,
	OpReturn:  EventReturned,
}

// ChangeEvent is one event of a branch's change, in the order the change
// reports them; Entry is the ledger row it reports (nil for coupon.expired).
type ChangeEvent struct {
	Type  string
	Entry *Entry
}

// Events are the events a change reports: one per ledger row, then
// coupon.expired when the change leaves the coupon EXPIRED (a lock
// released, or a use reverted, after the coupon's expiry).
func (ch *Change) Events() []ChangeEvent {
	out := make([]ChangeEvent, 0, len(ch.Ledger)+1)
	for i := range ch.Ledger {
		t, ok := eventOfOp[ch.Ledger[i].Op]
		if !ok {
			t = "coupon." + strings.ToLower(ch.Ledger[i].Op) // every op is mapped above; a test holds it so
		}
		out = append(out, ChangeEvent{Type: t, Entry: &ch.Ledger[i]})
	}
	if ch.Status == CouponExpired {
		out = append(out, ChangeEvent{Type: EventExpired})
	}
	return out
}

// EventID is the ID of a coupon's seq-th event: stable, so a resend
// carries the same ID and consumers deduplicate by it.
func EventID(code string, seq int64) string { return fmt.Sprintf("%s.%d", code, seq) }
