package fake

import (
	"context"
	"sync"
	"time"

	"github.com/opencoupon/coupon/participant"
)

// Stock is the fake of participant.Stock: per template, a generation and
// the units left on each sub-key. A unit is taken only from a sub-key
// holding one, so no counter goes negative; Give and Add apply once per
// ticket or operation, and only to their own generation.
type Stock struct {
	mu       sync.Mutex
	counters map[int64]*counters
	once     map[string]bool // tickets given back and top-ups added
}

type counters struct {
	gen  string
	subs []int64
}

var _ participant.Stock = (*Stock)(nil)

// NewStock returns stock with no counters: every template's are missing.
func NewStock() *Stock { return &Stock{counters: map[int64]*counters{}, once: map[string]bool{}} }

func subKeys(k int32) int32 { return max(k, 1) }

// Take takes one unit from the sub-key picked by hint, or the next ones
// while they are empty.
func (s *Stock) Take(_ context.Context, templateID int64, _ int32, hint uint64) (participant.Ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters[templateID]
	if c == nil {
		return participant.Ticket{}, participant.ErrStockMissing
	}
	k := int32(len(c.subs))
	start := int32(hint % uint64(k))
	for j := range k {
		i := (start + j) % k
		if c.subs[i] > 0 {
			c.subs[i]--
			return participant.Ticket{TemplateID: templateID, Sub: i, Generation: c.gen, ID: token()}, nil
		}
	}
	return participant.Ticket{}, participant.ErrSoldOut
}

// Give returns the unit t took, once, unless the counters were rebuilt since.
func (s *Stock) Give(_ context.Context, t participant.Ticket) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters[t.TemplateID]
	if c == nil || c.gen != t.Generation || s.once["give:"+t.ID] || int(t.Sub) >= len(c.subs) {
		return nil
	}
	s.once["give:"+t.ID] = true
	c.subs[t.Sub]++
	return nil
}

// Remaining sums the sub-keys; ok is false when the counters are missing.
func (s *Stock) Remaining(_ context.Context, templateID int64, _ int32) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters[templateID]
	if c == nil {
		return 0, false, nil
	}
	var n int64
	for _, v := range c.subs {
		n += v
	}
	return n, true, nil
}

// Generation is the generation of the template's counters.
func (s *Stock) Generation(_ context.Context, templateID int64) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.counters[templateID]; c != nil {
		return c.gen, true, nil
	}
	return "", false, nil
}

// Reset drops the template's counters.
func (s *Stock) Reset(_ context.Context, templateID int64, _ int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.counters, templateID)
	return nil
}

// Set writes counters of a new generation holding remaining units spread
// over subKeys sub-keys.
func (s *Stock) Set(_ context.Context, templateID int64, subKeys32 int32, remaining int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := subKeys(subKeys32)
	c := &counters{gen: token(), subs: make([]int64, k)}
	for i := range k {
		c.subs[i] = share(remaining, k, i)
	}
	s.counters[templateID] = c
	return nil
}

// share is sub-key i's part of n units over k sub-keys.
func share(n int64, k, i int32) int64 {
	part := n / int64(k)
	if int64(i) < n%int64(k) {
		part++
	}
	return part
}

// Add spreads n units over the counters of generation gen, once per opID.
func (s *Stock) Add(_ context.Context, templateID int64, _ int32, n int64, gen, opID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters[templateID]
	if c == nil || c.gen != gen {
		return false, nil
	}
	if s.once["add:"+opID] {
		return true, nil
	}
	s.once["add:"+opID] = true
	k := int32(len(c.subs))
	for i := range k {
		c.subs[i] += share(n, k, i)
	}
	return true, nil
}

// Requests is the fake of participant.Requests: markers that expire by the
// clock, in one bucket born at its first marker.
type Requests struct {
	mu      sync.Mutex
	now     func() time.Time
	born    time.Time
	markers map[string]marker
}

type marker struct {
	participant.Marker
	expires time.Time
}

var _ participant.Requests = (*Requests)(nil)

// NewRequests returns an empty marker store.
func NewRequests(now func() time.Time) *Requests {
	return &Requests{now: now, markers: map[string]marker{}}
}

// Lose drops every marker and the bucket's birth, as Redis losing its data.
func (r *Requests) Lose() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.markers = map[string]marker{}
	r.born = time.Time{}
}

// held is the live marker of id. r.mu is held.
func (r *Requests) held(id string) (marker, bool) {
	m, ok := r.markers[id]
	if ok && !r.now().Before(m.expires) {
		delete(r.markers, id)
		return marker{}, false
	}
	return m, ok
}

// Begin marks requestID for fp, or reports who holds it.
func (r *Requests) Begin(_ context.Context, requestID, fp string, ttl time.Duration) (string, bool, participant.Marker, time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.born.IsZero() {
		r.born = now
	}
	if m, ok := r.held(requestID); ok {
		return "", false, m.Marker, r.born, nil
	}
	tok := token()
	r.markers[requestID] = marker{participant.Marker{FP: fp, Token: tok, Started: now}, now.Add(ttl)}
	return tok, true, participant.Marker{}, r.born, nil
}

// Peek reads the marker without marking; a bucket never born reads as born now.
func (r *Requests) Peek(_ context.Context, requestID string) (*participant.Marker, time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	since := r.born
	if since.IsZero() {
		since = r.now()
	}
	if m, ok := r.held(requestID); ok {
		return &m.Marker, since, nil
	}
	return nil, since, nil
}

func same(a, b participant.Marker) bool {
	return a.FP == b.FP && a.Token == b.Token && a.Started.Equal(b.Started) && a.MaybeIssued == b.MaybeIssued
}

// TakeOver replaces the marker held with one for fp, unless it changed.
func (r *Requests) TakeOver(_ context.Context, requestID string, held participant.Marker, fp string, ttl time.Duration) (string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.held(requestID)
	if !ok || !same(m.Marker, held) {
		return "", false, nil
	}
	tok, now := token(), r.now()
	r.markers[requestID] = marker{participant.Marker{FP: fp, Token: tok, Started: now}, now.Add(ttl)}
	return tok, true, nil
}

// Forget drops the marker the call holding tok took.
func (r *Requests) Forget(_ context.Context, requestID, fp, tok string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.held(requestID); ok && m.FP == fp && m.Token == tok {
		delete(r.markers, requestID)
	}
	return nil
}

// MaybeIssued marks the marker the call holding tok took as maybe issued,
// keeping its expiry.
func (r *Requests) MaybeIssued(_ context.Context, requestID, fp, tok string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.held(requestID); ok && m.FP == fp && m.Token == tok {
		m.MaybeIssued = true
		r.markers[requestID] = m
	}
	return nil
}

// Leases is the fake of participant.Leases: locks that lapse by the clock.
type Leases struct {
	mu   sync.Mutex
	now  func() time.Time
	held map[string]lease
}

type lease struct {
	tok     string
	expires time.Time
}

var _ participant.Leases = (*Leases)(nil)

// NewLeases returns leases that nobody holds.
func NewLeases(now func() time.Time) *Leases { return &Leases{now: now, held: map[string]lease{}} }

// Lock takes the lease name for ttl unless another holder's has not lapsed.
func (l *Leases) Lock(_ context.Context, name string, ttl time.Duration) (func(), bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if h, ok := l.held[name]; ok && now.Before(h.expires) {
		return nil, false, nil
	}
	tok := token()
	l.held[name] = lease{tok, now.Add(ttl)}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.held[name].tok == tok {
			delete(l.held, name)
		}
	}, true, nil
}

// Blobs is the fake of participant.Blobs: values and stamps that expire by
// the clock; a value is stored only under its current stamp.
type Blobs struct {
	mu     sync.Mutex
	now    func() time.Time
	values map[string]expiring
	stamps map[string]expiring
}

type expiring struct {
	v       []byte
	expires time.Time
}

var _ participant.Blobs = (*Blobs)(nil)

// stampTTL outlives any reload, as the adapter's does.
const stampTTL = 10 * time.Minute

// NewBlobs returns an empty cache.
func NewBlobs(now func() time.Time) *Blobs {
	return &Blobs{now: now, values: map[string]expiring{}, stamps: map[string]expiring{}}
}

func (b *Blobs) live(m map[string]expiring, key string) ([]byte, bool) {
	e, ok := m[key]
	if !ok || !b.now().Before(e.expires) {
		delete(m, key)
		return nil, false
	}
	return e.v, true
}

// GetBlob reads a cached value.
func (b *Blobs) GetBlob(_ context.Context, key string) ([]byte, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.live(b.values, key)
	return append([]byte(nil), v...), ok, nil
}

// Stamp is the value's current stamp, "" when none.
func (b *Blobs) Stamp(_ context.Context, key string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, _ := b.live(b.stamps, key)
	return string(v), nil
}

// PutBlob stores v for ttl if the value's stamp is still stamp.
func (b *Blobs) PutBlob(_ context.Context, key string, v []byte, ttl time.Duration, stamp string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, _ := b.live(b.stamps, key); string(cur) != stamp {
		return false, nil
	}
	b.values[key] = expiring{append([]byte(nil), v...), b.now().Add(ttl)}
	return true, nil
}

// DelBlobs drops values and renews their stamps.
func (b *Blobs) DelBlobs(_ context.Context, keys ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		delete(b.values, k)
		b.stamps[k] = expiring{[]byte(token()), b.now().Add(stampTTL)}
	}
	return nil
}
