package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// acks receives JetStream's acknowledgements of the relay's publishes on
// one subscription: a message's reply subject is the relay's inbox, the
// number of its wave and its index in the wave, so an acknowledgement is
// matched to its event without a future, a channel or a map entry per
// message (what jetstream.PublishMsgAsync spends), and one that arrives
// after its wave was given up on is dropped.
type acks struct {
	inbox string

	mu    sync.Mutex
	next  uint64
	waves map[uint64]*wave
}

// wave is one wave's acknowledgements.
type wave struct {
	id       uint64
	prefix   string // reply subjects are prefix + index
	acked    []bool
	answered []bool
	replies  int   // answers received
	sent     int   // messages sent, -1 until the wave is sent
	err      error // the errors JetStream answered, joined
	done     chan struct{}
}

func newAcks(nc *nats.Conn) (*acks, error) {
	a := &acks{inbox: nc.NewRespInbox(), waves: map[uint64]*wave{}}
	if _, err := nc.Subscribe(a.inbox+".*.*", a.receive); err != nil {
		return nil, fmt.Errorf("relay: subscribe to acknowledgements: %w", err)
	}
	return a, nil
}

// start opens a wave of n messages.
func (a *acks) start(n int) *wave {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next++
	w := &wave{id: a.next, prefix: a.inbox + "." + strconv.FormatUint(a.next, 10) + ".", acked: make([]bool, n),
		answered: make([]bool, n), sent: -1, done: make(chan struct{})}
	a.waves[w.id] = w
	return w
}

// sent says how many of w's messages went out: only their answers are
// awaited.
func (a *acks) sent(w *wave, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w.sent = n
	if w.replies == n {
		close(w.done)
	}
}

// end closes w: answers arriving later are dropped. It returns which of
// w's messages JetStream acknowledged and the errors it answered.
func (a *acks) end(w *wave) ([]bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.waves, w.id)
	return w.acked, w.err
}

// wait waits until every sent message of w was answered, or timeout, or
// ctx's end.
func (a *acks) wait(ctx context.Context, w *wave, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
		return nil
	case <-t.C:
		return fmt.Errorf("publish: no acknowledgement within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *acks) receive(m *nats.Msg) {
	rest, ok := strings.CutPrefix(m.Subject, a.inbox+".")
	if !ok {
		return
	}
	ws, is, ok := strings.Cut(rest, ".")
	if !ok {
		return
	}
	id, err1 := strconv.ParseUint(ws, 10, 64)
	i, err2 := strconv.Atoi(is)
	if err1 != nil || err2 != nil {
		return
	}
	perr := pubAckError(m)
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.waves[id]
	if w == nil || i < 0 || i >= len(w.answered) || w.answered[i] {
		return
	}
	w.answered[i] = true
	w.replies++
	if perr == nil {
		w.acked[i] = true
	} else {
		w.err = errors.Join(w.err, perr)
	}
	if w.replies == w.sent {
		close(w.done)
	}
}

var (
	seqField   = []byte(`"seq":`)
	errorField = []byte(`"error"`)
)

// pubAckError is nil when m acknowledges a stored message (or a duplicate
// of one), and says why not otherwise. An acknowledgement is a small JSON
// object, {"stream":…,"seq":…} or {"error":{…}}; the common one is
// recognised without decoding it.
func pubAckError(m *nats.Msg) error {
	if len(m.Data) == 0 {
		// A status without a body: 503 when no stream listens on the
		// subject.
		status := ""
		if m.Header != nil {
			status = m.Header.Get("Status") + " " + m.Header.Get("Description")
		}
		return fmt.Errorf("publish: no acknowledgement, status %q", strings.TrimSpace(status))
	}
	if !bytes.Contains(m.Data, errorField) {
		if bytes.Contains(m.Data, seqField) {
			return nil
		}
		return fmt.Errorf("publish: unexpected answer %q", m.Data)
	}
	var r struct {
		Seq   uint64 `json:"seq"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("publish: unexpected answer %q", m.Data)
	}
	if r.Error != nil {
		return fmt.Errorf("publish: JetStream refused: %s (%d/%d)", r.Error.Description, r.Error.Code, r.Error.ErrCode)
	}
	if r.Seq == 0 {
		return fmt.Errorf("publish: unexpected answer %q", m.Data)
	}
	return nil
}
