package participant

import (
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"time"
)

// IDGen makes unique, time-ordered 63-bit IDs (snowflake layout: 41 bits of
// milliseconds since 2024-01-01, 10 bits of node, 12 bits of sequence).
// Every replica must run with its own node number.
type IDGen struct {
	mu   sync.Mutex
	node int64
	last int64
	seq  int64
	now  func() time.Time
}

var idEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// NewIDGen returns a generator for node in [0, 1023].
func NewIDGen(node int64, now func() time.Time) (*IDGen, error) {
	if node < 0 || node > 1023 {
		return nil, fmt.Errorf("id generator node %d out of range 0..1023", node)
	}
	if now == nil {
		now = time.Now
	}
	return &IDGen{node: node, now: now}, nil
}

// Next returns the next ID. It waits for the next millisecond when 4096 IDs
// were made in one, and never goes backwards when the clock does.
func (g *IDGen) Next() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := g.now().UnixMilli() - idEpoch
	if ms < g.last {
		ms = g.last
	}
	if ms == g.last {
		g.seq = (g.seq + 1) & 0xfff
		if g.seq == 0 {
			ms++
		}
	} else {
		g.seq = 0
	}
	g.last = ms
	return ms<<22 | g.node<<12 | g.seq
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// CouponCode turns an ID into a 16-character code: the ID in Crockford
// base32 followed by 3 random characters, so codes are unique and not
// guessable from a neighbour's.
func CouponCode(id int64) string {
	var b [16]byte
	v := uint64(id)
	for i := 12; i >= 0; i-- {
		b[i] = crockford[v&31]
		v >>= 5
	}
	var r [3]byte
	_, _ = rand.Read(r[:])
	for i := range r {
		b[13+i] = crockford[r[i]&31]
	}
	return string(b[:])
}

// CodeID is the coupon ID a code carries (its first 13 characters), so
// that a code is looked up by primary key; ok is false for a string that
// is not a code.
func CodeID(code string) (int64, bool) {
	if !ValidCode(code) {
		return 0, false
	}
	var v uint64
	for i := 0; i < 13; i++ {
		d := strings.IndexByte(crockford, code[i])
		v = v<<5 | uint64(d)
	}
	if v>>63 != 0 {
		return 0, false
	}
	return int64(v), true
}
