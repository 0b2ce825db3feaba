package participant

import (
	"crypto/rand"
	"encoding/binary"
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

// Code layout: the coupon ID in 13 Crockford base32 characters, then a
// tag of 64 random bits in 13 more. The ID routes a lookup to its row by
// primary key; the tag makes a code unguessable from a neighbour's, whose
// ID differs only in its low bits. Codes minted before the tag had 3
// random characters (15 bits) in place of it; they stay valid.
const (
	codeIDLen  = 13
	codeTagLen = 13
)

// CouponCode turns an ID into a 26-character code: the ID followed by a
// 64-bit random tag, both in Crockford base32.
func CouponCode(id int64) string {
	var b [codeIDLen + codeTagLen]byte
	putBase32(b[:codeIDLen], uint64(id))
	var r [8]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails (Go 1.24)
	putBase32(b[codeIDLen:], binary.BigEndian.Uint64(r[:]))
	return string(b[:])
}

// putBase32 writes v into dst in base32, most significant digit first;
// 13 digits hold 64 bits.
func putBase32(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = crockford[v&31]
		v >>= 5
	}
}

// CodeID is the coupon ID a code carries (its first 13 characters), so
// that a code is looked up by primary key; ok is false for a string that
// is not a code.
func CodeID(code string) (int64, bool) {
	if !ValidCode(code) {
		return 0, false
	}
	// 13 digits are 65 bits; an ID has 63, so its first digit is at most 7.
	if strings.IndexByte(crockford, code[0]) > 7 {
		return 0, false
	}
	var v uint64
	for i := 0; i < codeIDLen; i++ {
		v = v<<5 | uint64(strings.IndexByte(crockford, code[i]))
	}
	return int64(v), true
}
