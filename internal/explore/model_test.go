package explore_test

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"google.golang.org/grpc/codes"
)

// The model of DTM: which transactions touch the coupon, which branch
// calls DTM has sent and not yet seen answered, and what each answer makes
// it do next. It decides nothing by itself: every choice (which call is
// delivered next, a duplicate, a Try's timeout, a global outcome, a
// janitor pass, a reconcile repair) is an event the explorer picks.

type kind uint8

const (
	kindTCC kind = iota
	kindSaga
	kindRefund
)

// spec is one transaction of the set the explorer draws from.
type spec struct {
	name  string
	kind  kind
	order int // index into the execution's orders; the refund's is its target's
}

// specs: a TCC for order 1, a second TCC for the same order (the order
// service retrying under a new gid), a Saga for order 2 of the same user,
// and the refund message of whichever order committed first.
var specs = []spec{
	{"tcc1", kindTCC, 0},
	{"tcc2", kindTCC, 0},
	{"saga", kindSaga, 1},
	{"refund", kindRefund, -1},
}

const refundTx = 3

type phase uint8

const (
	idle       phase = iota
	reserving        // Try / Use sent, answer awaited
	reserved         // Try / Use answered OK, global outcome undecided
	committing       // TCC committed: Confirm until OK
	aborting         // Cancel / Revert until OK
	sending          // the message's Return until OK
	succeeded
	failed
)

func (p phase) finished() bool { return p == succeeded || p == failed }

type txn struct {
	phase     phase
	ok        bool // the reservation answered OK
	committed bool
	refunded  bool
}

// call is a branch call DTM has sent and not had answered: delivered, it
// runs against the service. late: DTM no longer waits for it (a Try after
// its timeout); it may arrive or never.
type call struct {
	tx   int
	op   string
	late bool
}

// dupable is a call delivered once that the network may deliver again.
type dupable struct {
	tx   int
	op   string
	done bool
}

type model struct {
	tx       [4]txn
	pending  []call
	dups     []dupable
	dupsUsed int
	janitor  bool
	repair   bool
	refundOf int // the transaction the refund is for; -1 before
	started  int
}

func newModel() model { return model{refundOf: -1} }

type evKind uint8

const (
	evStart evKind = iota
	evDeliver
	evDup
	evTimeout
	evCommit
	evAbort
	evJanitor
	evRepair
	evEnd
)

type event struct {
	kind evKind
	tx   int
	idx  int // pending or dups index
}

// bounds limit the schedules explored.
type bounds struct {
	Txns    int  // transactions started per schedule, of tcc1, tcc2, saga, refund
	Dups    int  // duplicate deliveries per schedule (each call at most twice)
	Janitor bool // one barrier janitor pass at any point
	Repair  bool // one reconcile repair at any point
}

func (b bounds) String() string {
	return fmt.Sprintf("txns=%d dups=%d janitor=%t repair=%t", b.Txns, b.Dups, b.Janitor, b.Repair)
}

func (m *model) mandatory() bool {
	for _, c := range m.pending {
		if !c.late {
			return true
		}
	}
	return false
}

func (m *model) allFinished() bool {
	for _, t := range m.tx {
		if t.phase != idle && !t.phase.finished() {
			return false
		}
	}
	return true
}

// refundTarget is the first committed transaction whose reservation
// answered OK: the payment a refund gives back. -1 when none.
func (m *model) refundTarget() int {
	for i := range refundTx {
		if m.tx[i].committed && m.tx[i].ok {
			return i
		}
	}
	return -1
}

// options lists the events possible now, in a fixed order.
func (m *model) options(b bounds) []event {
	var out []event
	if m.started > 0 && m.allFinished() && !m.mandatory() {
		out = append(out, event{kind: evEnd})
	}
	if m.started < b.Txns {
		for i, t := range m.tx {
			if t.phase != idle || i == refundTx && m.refundTarget() < 0 {
				continue
			}
			out = append(out, event{kind: evStart, tx: i})
		}
	}
	for i := range m.pending {
		out = append(out, event{kind: evDeliver, idx: i})
	}
	if m.dupsUsed < b.Dups {
		for i, d := range m.dups {
			if !d.done {
				out = append(out, event{kind: evDup, idx: i})
			}
		}
	}
	for i, t := range m.tx {
		switch {
		case t.phase == reserving && specs[i].kind == kindTCC:
			out = append(out, event{kind: evTimeout, tx: i})
		case t.phase == reserved && m.orderRefunded(specs[i].order):
			// The order's own branch refuses a refunded order: the
			// transaction can only roll back.
			out = append(out, event{kind: evAbort, tx: i})
		case t.phase == reserved:
			out = append(out, event{kind: evCommit, tx: i}, event{kind: evAbort, tx: i})
		}
	}
	if b.Janitor && !m.janitor && m.started > 0 {
		out = append(out, event{kind: evJanitor})
	}
	if b.Repair && !m.repair && m.started > 0 {
		out = append(out, event{kind: evRepair})
	}
	return out
}

// orderRefunded reports whether order (an index of the execution's
// orders) was refunded.
func (m *model) orderRefunded(order int) bool {
	return m.refundOf >= 0 && specs[m.refundOf].order == order
}

// firstOp is the call that starts a transaction.
func firstOp(k kind) string {
	switch k {
	case kindTCC:
		return dtmimp.OpTry
	default:
		return dtmimp.OpAction
	}
}

// start begins transaction i: its first call is pending.
func (m *model) start(i int) {
	m.started++
	m.tx[i].phase = reserving
	if i == refundTx {
		m.tx[i].phase = sending
		m.refundOf = m.refundTarget()
		m.tx[m.refundOf].refunded = true
	}
	m.pending = append(m.pending, call{tx: i, op: firstOp(specs[i].kind)})
}

// delivered takes pending call k out and remembers it may come again.
func (m *model) delivered(k int) call {
	c := m.pending[k]
	m.pending = append(m.pending[:k:k], m.pending[k+1:]...)
	for _, d := range m.dups {
		if d.tx == c.tx && d.op == c.op {
			return c
		}
	}
	m.dups = append(m.dups, dupable{tx: c.tx, op: c.op})
	return c
}

// answer is what DTM does with the answer to a call it waits for.
func (m *model) answer(c call, code codes.Code) {
	t := &m.tx[c.tx]
	k := specs[c.tx].kind
	retry := func() { m.pending = append(m.pending, call{tx: c.tx, op: c.op}) }
	switch {
	case c.op == dtmimp.OpTry && t.phase == reserving:
		if code == codes.OK {
			t.phase, t.ok = reserved, true
			return
		}
		// The order service sees the Try fail and aborts.
		m.abort(c.tx)
	case c.op == dtmimp.OpAction && k == kindSaga && t.phase == reserving:
		switch code {
		case codes.OK:
			t.phase, t.ok = reserved, true
		case codes.Aborted:
			m.abort(c.tx)
		default:
			retry()
		}
	case c.op == dtmimp.OpAction && k == kindRefund && t.phase == sending,
		c.op == dtmimp.OpConfirm && t.phase == committing,
		(c.op == dtmimp.OpCancel || c.op == dtmimp.OpCompensate) && t.phase == aborting:
		if code != codes.OK {
			retry()
			return
		}
		t.phase = succeeded
		if c.op == dtmimp.OpCancel || c.op == dtmimp.OpCompensate {
			t.phase = failed
		}
	}
}

func (m *model) abort(i int) {
	m.tx[i].phase = aborting
	op := dtmimp.OpCancel
	if specs[i].kind == kindSaga {
		op = dtmimp.OpCompensate
	}
	m.pending = append(m.pending, call{tx: i, op: op})
}

// commit is DTM deciding transaction i's success: a TCC's Confirms run
// (the order's first, so the order is PAID before the coupon's Confirm);
// a saga's last branch succeeded.
func (m *model) commit(i int) {
	t := &m.tx[i]
	t.committed = true
	if specs[i].kind == kindSaga {
		t.phase = succeeded
		return
	}
	t.phase = committing
	m.pending = append(m.pending, call{tx: i, op: dtmimp.OpConfirm})
}

// timeout is the order service giving up on a TCC's Try: it aborts, and
// the Try may still arrive, before or after the Cancel.
func (m *model) timeout(i int) {
	for k := range m.pending {
		if m.pending[k].tx == i && m.pending[k].op == dtmimp.OpTry {
			m.pending[k].late = true
		}
	}
	m.abort(i)
}

// forget drops the late calls and duplicates of finished transactions
// after a janitor pass: the janitor's retention is what bounds how late a
// call can arrive, so none arrives after its barrier rows are gone.
func (m *model) forget() {
	keep := m.pending[:0:0]
	for _, c := range m.pending {
		if !(c.late && m.tx[c.tx].phase.finished()) {
			keep = append(keep, c)
		}
	}
	m.pending = keep
	for k := range m.dups {
		if m.tx[m.dups[k].tx].phase.finished() {
			m.dups[k].done = true
		}
	}
}

// sortPending keeps pending calls in one order: which was sent first
// does not matter to DTM's retries, and one order makes equal states
// equal.
func (m *model) sortPending() {
	slices.SortFunc(m.pending, func(a, b call) int {
		return cmp.Or(cmp.Compare(a.tx, b.tx), strings.Compare(a.op, b.op), cmp.Compare(b2i(a.late), b2i(b.late)))
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (m *model) clone() model {
	n := *m
	n.pending = slices.Clone(m.pending)
	n.dups = slices.Clone(m.dups)
	return n
}

// essential is the model's state without what only bounds or adds
// options: used duplicates, dropped optional calls, the janitor and
// repair flags.
func (m *model) essential() string {
	var b strings.Builder
	for _, t := range m.tx {
		fmt.Fprintf(&b, "%d%t%t%t|", t.phase, t.ok, t.committed, t.refunded)
	}
	for _, c := range m.pending {
		if !c.late {
			fmt.Fprintf(&b, "p%d%s", c.tx, c.op)
		}
	}
	fmt.Fprintf(&b, "|%d%d", m.refundOf, m.started)
	return b.String()
}

// key is the model's state, for the explorer's memo of visited states.
func (m *model) key() string {
	var b strings.Builder
	for _, t := range m.tx {
		fmt.Fprintf(&b, "%d%t%t%t|", t.phase, t.ok, t.committed, t.refunded)
	}
	for _, c := range m.pending {
		fmt.Fprintf(&b, "p%d%s%t", c.tx, c.op, c.late)
	}
	b.WriteByte('|')
	for _, d := range m.dups {
		fmt.Fprintf(&b, "d%d%s%t", d.tx, d.op, d.done)
	}
	fmt.Fprintf(&b, "|%d%t%t%d%d", m.dupsUsed, m.janitor, m.repair, m.refundOf, m.started)
	return b.String()
}

func (m *model) describe(e event) string {
	switch e.kind {
	case evStart:
		return specs[e.tx].name + ".start"
	case evDeliver:
		c := m.pending[e.idx]
		s := specs[c.tx].name + "." + c.op
		if c.late {
			s += "(late)"
		}
		return s
	case evDup:
		d := m.dups[e.idx]
		return specs[d.tx].name + "." + d.op + "(again)"
	case evTimeout:
		return specs[e.tx].name + ".timeout"
	case evCommit:
		return specs[e.tx].name + ".commit"
	case evAbort:
		return specs[e.tx].name + ".abort"
	case evJanitor:
		return "janitor"
	case evRepair:
		return "repair"
	default:
		return "end"
	}
}
