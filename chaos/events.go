package chaos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/participant"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
)

// eventsInvariant is "every committed change has exactly one event".
const eventsInvariant = 7

// startNATS starts the stack's nats-server with JetStream, its store under
// the run directory; the coupon service reaches it through proxyNATS, the
// checks directly.
func (s *Stack) startNATS(ctx context.Context) error {
	server, err := lookPath("nats-server")
	if err != nil {
		return err
	}
	if s.natsPort, err = freePort(); err != nil {
		return err
	}
	s.nats = newProcess("nats", s.Dir, nil, server, "-a", "127.0.0.1", "-p", fmt.Sprint(s.natsPort),
		"-js", "-sd", filepath.Join(s.Dir, "nats"))
	return s.restartNATS(ctx)
}

// restartNATS starts nats-server (again, after a kill) on its port and
// store, and waits until it accepts connections.
func (s *Stack) restartNATS(ctx context.Context) error {
	return s.nats.start(ctx, dialReady(addr(s.natsPort)))
}

// jetStream connects to the stack's nats-server directly (not through the
// coupon service's proxy); close the connection when done.
func (s *Stack) jetStream() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect("nats://"+addr(s.natsPort), nats.Name("couponlab-chaos"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats-server: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// streamLastSeq is the sequence of the last message in the events stream,
// 0 while the relay has not made the stream yet.
func (s *Stack) streamLastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, js, err := s.jetStream()
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	st, err := js.Stream(ctx, relay.DefaultStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", relay.DefaultStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", relay.DefaultStream, err)
	}
	return info.State.LastSeq, nil
}

// streamEvent is one message of the events stream.
type streamEvent struct {
	Seq     uint64 // in the stream
	Subject string
	MsgID   string // the Nats-Msg-Id header
	Event   *couponeventsv1.Event
}

// streamEvents reads the events stream after sequence after, in stream
// order, up to its last message when the read began.
func (s *Stack) streamEvents(ctx context.Context, after uint64) ([]streamEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	nc, js, err := s.jetStream()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	st, err := js.Stream(ctx, relay.DefaultStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", relay.DefaultStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", relay.DefaultStream, err)
	}
	last := info.State.LastSeq
	if last < after {
		return nil, fmt.Errorf("stream %s went back from sequence %d to %d: stored events were lost", relay.DefaultStream, after, last)
	}
	if last == after {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1})
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", relay.DefaultStream, err)
	}
	var out []streamEvent
	for next := after; next < last; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read stream %s: %w", relay.DefaultStream, err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("read stream %s: %w", relay.DefaultStream, err)
			}
			next = md.Sequence.Stream
			if next > last {
				continue // published after the read began
			}
			e := new(couponeventsv1.Event)
			if err := proto.Unmarshal(m.Data(), e); err != nil {
				return nil, fmt.Errorf("stream %s message %d: %w", relay.DefaultStream, next, err)
			}
			out = append(out, streamEvent{Seq: next, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Event: e})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read stream %s: %w", relay.DefaultStream, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read stream %s up to %d (at %d): %w", relay.DefaultStream, last, next, err)
		}
	}
	return out, nil
}

// outboxRows counts the events waiting in each outbox (main, shard_0, …).
func (s *Stack) outboxRows(ctx context.Context) (map[string]int64, error) {
	dbs := map[string]string{"main": dbMain}
	for i := range shards {
		dbs[fmt.Sprintf("shard_%d", i)] = shardName(i)
	}
	out := map[string]int64{}
	for name, db := range dbs {
		var n int64
		if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(n), 0) FROM `+db+`.coupon_outbox`).Scan(&n); err != nil {
			return nil, fmt.Errorf("count outbox %s: %w", name, err)
		}
		out[name] = n
	}
	return out, nil
}

func total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// awaitOutboxesEmpty polls the outboxes until the relay has emptied them
// all, and returns what is left when deadline passes first (nil: empty).
func (s *Stack) awaitOutboxesEmpty(ctx context.Context, deadline time.Time) (map[string]int64, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rows, err := s.outboxRows(ctx)
		if err != nil {
			return nil, err
		}
		if total(rows) == 0 {
			return nil, nil
		}
		if time.Now().After(deadline) {
			return rows, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// eventSeqs maps each coupon of templates tpls to its event_seq.
func (s *Stack) eventSeqs(ctx context.Context, tpls []int64) (map[string]int64, error) {
	out := map[string]int64{}
	for i := range shards {
		db := shardName(i)
		ts, err := s.couponTables(ctx, db)
		if err != nil {
			return nil, err
		}
		for _, t := range ts {
			rows, err := s.db.QueryContext(ctx, `SELECT code, event_seq FROM `+db+`.`+t+` WHERE template_id IN (`+inList(tpls)+`)`)
			if err != nil {
				return nil, fmt.Errorf("read event_seq of %s.%s: %w", db, t, err)
			}
			for rows.Next() {
				var code string
				var n int64
				if err := rows.Scan(&code, &n); err != nil {
					rows.Close()
					return nil, err
				}
				out[code] = n
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// checkEventStream checks invariant 7 for the scenario's coupons: once
// every outbox is empty (or wait has passed), the stream after sequence
// after (where it stood when the scenario began, so earlier scenarios'
// events are not judged again) against the coupons' event_seq. The
// coupons are read before the outboxes are found empty and again after
// the stream: every event a coupon counted in the first reading was then
// stored, and an equal second reading shows that nothing changed in
// between. Until the two agree (or wait passes) it reads again.
func (s *Stack) checkEventStream(ctx context.Context, v *verdict, r *run, after uint64, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		before, err := s.eventSeqs(ctx, r.tpls)
		if err != nil {
			return err
		}
		left, err := s.awaitOutboxesEmpty(ctx, deadline)
		if err != nil {
			return err
		}
		evs, err := s.streamEvents(ctx, after)
		if err != nil {
			return err
		}
		now, err := s.eventSeqs(ctx, r.tpls)
		if err != nil {
			return err
		}
		if !maps.Equal(before, now) && time.Now().Before(deadline) {
			continue // a change landed meanwhile: read again
		}
		if !maps.Equal(before, now) {
			return fmt.Errorf("the scenario's coupons kept changing for %s after quiescence", wait)
		}
		if left != nil {
			var parts []string
			for _, name := range slices.Sorted(maps.Keys(left)) {
				parts = append(parts, fmt.Sprintf("%s %d", name, left[name]))
			}
			v.fail(eventsInvariant, "outbox", "%d events still unpublished %s after quiescence (%s)", total(left), wait, strings.Join(parts, ", "))
		}
		resends := checkEvents(v, r.tpls, now, evs)
		v.note(eventsInvariant, fmt.Sprintf("%d coupons; %d stream messages, %d of them resends", len(now), len(evs), resends))
		return nil
	}
}

// checkEvents checks invariant 7 over evs, messages of the events stream
// in stream order, against coupons (code → event_seq) of templates tpls:
// after resends (an event ID seen before) are dropped, each coupon's
// events are numbered 1..event_seq in stream order, none missing, none
// twice, none beyond; each is the message its ID and type say; and no
// event of one of tpls names a coupon that does not exist. Events of
// other templates (earlier scenarios') and template events are left out.
// It returns how many resends it dropped.
func checkEvents(v *verdict, tpls []int64, coupons map[string]int64, evs []streamEvent) (resends int) {
	inScope := map[int64]bool{}
	for _, t := range tpls {
		inScope[t] = true
	}
	seen := map[string]bool{}
	seqs := map[string][]int64{}     // code → sequences in stream order
	badIDs := map[string][]string{}  // code → events whose ID is not code.sequence
	unknown := map[string][]string{} // code → events of a coupon that does not exist
	for _, m := range evs {
		e := m.Event
		id := e.GetId()
		if m.MsgID != id {
			v.fail(eventsInvariant, id, "stream message %d has Nats-Msg-Id %q", m.Seq, m.MsgID)
		}
		if want := relay.DefaultSubjectPrefix + e.GetType(); m.Subject != want {
			v.fail(eventsInvariant, id, "stream message %d on subject %q, want %q", m.Seq, m.Subject, want)
		}
		if seen[id] {
			resends++ // consumers drop it by ID
			continue
		}
		seen[id] = true
		code := e.GetCouponCode()
		if code == "" || !inScope[e.GetTemplateId()] {
			continue
		}
		if _, ok := coupons[code]; !ok {
			unknown[code] = append(unknown[code], id)
			continue
		}
		if id != participant.EventID(code, e.GetSequence()) {
			badIDs[code] = append(badIDs[code], fmt.Sprintf("%s with sequence %d", id, e.GetSequence()))
		}
		seqs[code] = append(seqs[code], e.GetSequence())
	}
	for _, code := range slices.Sorted(maps.Keys(coupons)) {
		problems := sequenceProblems(seqs[code], coupons[code])
		if ids := badIDs[code]; len(ids) > 0 {
			problems = append(problems, "event IDs not code.sequence: "+strings.Join(ids, ", "))
		}
		if len(problems) > 0 {
			v.fail(eventsInvariant, code, "event_seq %d, events in the stream %s: %s", coupons[code], seqList(seqs[code]), strings.Join(problems, "; "))
		}
	}
	for _, code := range slices.Sorted(maps.Keys(unknown)) {
		v.fail(eventsInvariant, code, "no such coupon, yet the stream has its events %s", strings.Join(unknown[code], ", "))
	}
	return resends
}

// sequenceProblems says how got (a coupon's event sequences in stream
// order) differs from 1..n; none when it is exactly that.
func sequenceProblems(got []int64, n int64) []string {
	var out []string
	count := map[int64]int{}
	var beyond, twice, after []string
	for i, s := range got {
		count[s]++
		if s > n || s < 1 {
			beyond = append(beyond, fmt.Sprint(s))
		}
		if count[s] == 2 {
			twice = append(twice, fmt.Sprint(s))
		}
		if i > 0 && s < got[i-1] {
			after = append(after, fmt.Sprintf("%d after %d", s, got[i-1]))
		}
	}
	var missing []string
	for s := int64(1); s <= n; s++ {
		if count[s] == 0 {
			missing = append(missing, fmt.Sprint(s))
		}
	}
	if len(missing) > 0 {
		out = append(out, "missing "+firstFew(missing))
	}
	if len(twice) > 0 {
		out = append(out, "twice under different IDs "+firstFew(twice))
	}
	if len(beyond) > 0 {
		out = append(out, "outside 1..event_seq "+firstFew(beyond))
	}
	if len(after) > 0 {
		out = append(out, "out of order "+firstFew(after))
	}
	return out
}

func firstFew(xs []string) string {
	if len(xs) > 6 {
		return strings.Join(xs[:6], ", ") + fmt.Sprintf(" (+%d)", len(xs)-6)
	}
	return strings.Join(xs, ", ")
}

func seqList(seqs []int64) string {
	parts := make([]string, len(seqs))
	for i, s := range seqs {
		parts[i] = fmt.Sprint(s)
	}
	return "[" + firstFew(parts) + "]"
}
