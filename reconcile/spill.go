package reconcile

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"unsafe"
)

// Spill record tags. Every record is a uvarint length, then the tag, then
// its fields; the first field is always the partition key (the order
// number, or the coupon code for uses), so a partition can be split again
// without decoding the rest.
const (
	tagOrder   = 'O'
	tagPayment = 'P'
	// Order and payment rows last updated before the window: they complete
	// an order that has rows in the window, and are dropped otherwise.
	tagOldOrder   = 'o'
	tagOldPayment = 'p'
	tagEntry      = 'L'
	tagSince      = 'S' // a carried pending order: since when
	tagChanged    = 'X' // a state row of the order changed after as-of
	tagUse        = 'U' // a CONSUME or RETURN, keyed by coupon code
)

// chunkSize is how much one producer buffers per partition before writing.
const chunkSize = 32 << 10

// spill is a set of partition files in a directory. Producers append
// through their own spillBuf; each partition's file is shared under a lock.
type spill struct {
	dir   string
	name  string
	seed  uint64
	parts []*part
}

type part struct {
	mu   sync.Mutex
	path string
	f    *os.File
	size int64
	err  error
}

func newSpill(dir, name string, n int, seed uint64) (*spill, error) {
	s := &spill{dir: dir, name: name, seed: seed, parts: make([]*part, n)}
	for i := range s.parts {
		p := &part{path: filepath.Join(dir, fmt.Sprintf("%s-%d-%04d", name, seed, i))}
		f, err := os.OpenFile(p.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("create spill file: %w", err)
		}
		p.f = f
		s.parts[i] = p
	}
	return s, nil
}

// close closes the files (they stay on disk for reading).
func (s *spill) close() error {
	var first error
	for _, p := range s.parts {
		if p == nil || p.f == nil {
			continue
		}
		if err := p.f.Close(); err != nil && first == nil {
			first = fmt.Errorf("close spill file: %w", err)
		}
		p.f = nil
		if p.err != nil && first == nil {
			first = p.err
		}
	}
	return first
}

func (p *part) write(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if _, err := p.f.Write(b); err != nil {
		p.err = fmt.Errorf("write spill file: %w", err)
		return p.err
	}
	p.size += int64(len(b))
	return nil
}

// hashKey is FNV-1a with a seed, finished with a mixer so that the low bits
// (the partition number) depend on every byte.
func hashKey(key string, seed uint64) uint64 {
	h := uint64(14695981039346656037) ^ (seed * 0x9E3779B97F4A7C15)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// spillBuf is one producer's buffers, one per partition.
type spillBuf struct {
	s    *spill
	bufs [][]byte
	rec  []byte
	// rows and inWindow count what the producer read and kept.
	rows, inWindow int64
}

func (s *spill) buffer() *spillBuf {
	return &spillBuf{s: s, bufs: make([][]byte, len(s.parts))}
}

// start begins a record; fields are appended to b.rec, then end files it.
func (b *spillBuf) start(tag byte, key string) {
	b.rec = append(b.rec[:0], tag)
	b.rec = appendStr(b.rec, key)
}

func (b *spillBuf) end(key string) error {
	i := hashKey(key, b.s.seed) % uint64(len(b.bufs))
	buf := binary.AppendUvarint(b.bufs[i], uint64(len(b.rec)))
	buf = append(buf, b.rec...)
	if len(buf) >= chunkSize {
		if err := b.s.parts[i].write(buf); err != nil {
			return err
		}
		buf = buf[:0]
	}
	b.bufs[i] = buf
	return nil
}

// flush writes what is left; the buffer is done then.
func (b *spillBuf) flush() error {
	for i, buf := range b.bufs {
		if len(buf) == 0 {
			continue
		}
		if err := b.s.parts[i].write(buf); err != nil {
			return err
		}
		b.bufs[i] = nil
	}
	return nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendInt(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }

func (b *spillBuf) order(o *Order, tag byte) error {
	b.start(tag, o.OrderNo)
	r := appendInt(b.rec, o.UserID)
	r = append(r, byte(o.Status))
	r = appendInt(r, o.Amount)
	r = appendStr(r, o.CouponCode)
	r = appendInt(r, o.Discount)
	r = appendInt(r, o.Payable)
	b.rec = appendInt(r, o.UpdatedAt)
	return b.end(o.OrderNo)
}

func (b *spillBuf) payment(p *Payment, tag byte) error {
	b.start(tag, p.OrderNo)
	r := appendStr(b.rec, p.PaymentID)
	r = append(r, byte(p.Status))
	r = appendInt(r, p.Amount)
	b.rec = appendInt(r, p.UpdatedAt)
	return b.end(p.OrderNo)
}

func (b *spillBuf) entry(e *Entry) error {
	b.start(tagEntry, e.OrderNo)
	r := appendStr(b.rec, e.CouponCode)
	r = append(r, byte(e.Op))
	r = appendInt(r, e.Discount)
	r = appendInt(r, e.UserID)
	r = appendInt(r, e.TemplateID)
	r = appendStr(r, e.GID)
	r = appendStr(r, e.BranchID)
	b.rec = appendInt(r, e.CreatedAt)
	return b.end(e.OrderNo)
}

func (b *spillBuf) since(orderNo string, day int32) error {
	b.start(tagSince, orderNo)
	b.rec = appendInt(b.rec, int64(day))
	return b.end(orderNo)
}

func (b *spillBuf) changed(orderNo string) error {
	b.start(tagChanged, orderNo)
	return b.end(orderNo)
}

func (b *spillBuf) use(e *Entry, carried bool) error {
	b.start(tagUse, e.CouponCode)
	r := appendStr(b.rec, e.OrderNo)
	r = append(r, byte(e.Op))
	r = appendInt(r, e.Discount)
	r = appendInt(r, e.CreatedAt)
	c := byte(0)
	if carried {
		c = 1
	}
	b.rec = append(r, c)
	return b.end(e.CouponCode)
}

// decoder reads one record's fields. Strings alias the partition's buffer.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.bad = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) str() string {
	n := d.uvarint()
	if uint64(len(d.b)) < n {
		d.bad = true
		return ""
	}
	s := d.b[:n]
	d.b = d.b[n:]
	if n == 0 {
		return ""
	}
	return unsafe.String(&s[0], len(s))
}

var errCorruptSpill = errors.New("corrupt spill file")

// records calls fn for every record in buf (a whole partition file).
func records(buf []byte, fn func(rec []byte) error) error {
	for len(buf) > 0 {
		n, k := binary.Uvarint(buf)
		if k <= 0 || uint64(len(buf)-k) < n || n == 0 {
			return errCorruptSpill
		}
		if err := fn(buf[k : k+int(n)]); err != nil {
			return err
		}
		buf = buf[k+int(n):]
	}
	return nil
}

// resplit streams one partition file into n files of a new spill with
// another seed, for a partition too large to join in memory.
func resplit(path, dir, name string, n int, seed uint64) (*spill, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open spill file: %w", err)
	}
	defer f.Close()
	s, err := newSpill(dir, name, n, seed)
	if err != nil {
		return nil, err
	}
	b := s.buffer()
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		size, err := binary.ReadUvarint(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			s.close()
			return nil, errCorruptSpill
		}
		if uint64(cap(b.rec)) < size {
			b.rec = make([]byte, size)
		}
		b.rec = b.rec[:size]
		if _, err := io.ReadFull(r, b.rec); err != nil {
			s.close()
			return nil, errCorruptSpill
		}
		d := decoder{b: b.rec[1:]}
		key := d.str()
		if d.bad {
			s.close()
			return nil, errCorruptSpill
		}
		// end copies rec before key's bytes are reused.
		if err := b.end(key); err != nil {
			s.close()
			return nil, err
		}
	}
	if err := b.flush(); err != nil {
		s.close()
		return nil, err
	}
	return s, s.close()
}
