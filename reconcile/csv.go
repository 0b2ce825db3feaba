package reconcile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// The CSV contract: columns are found by header name, in any order; other
// columns are ignored. Amounts are integer minor units, times RFC 3339.
var (
	OrderColumns   = []string{"order_no", "user_id", "status", "amount", "coupon_code", "discount_amount", "payable_amount", "updated_at"}
	PaymentColumns = []string{"payment_id", "order_no", "status", "amount", "updated_at"}
	CouponColumns  = []string{"order_no", "coupon_code", "op", "discount_amount", "user_id", "template_id", "gid", "created_at"}
	// CouponOptional columns are read when present: branch_id lets
	// --repair release an orphan lock found in an export.
	CouponOptional = []string{"branch_id"}
)

// CSVOrders, CSVPayments and CSVCoupons read the three ledgers from files
// in the CSV contract.
type (
	CSVOrders struct {
		Path string
		part *byteRange
	}
	CSVPayments struct {
		Path string
		part *byteRange
	}
	CSVCoupons struct {
		Path string
		part *byteRange
	}
)

// parts split a file in n byte ranges read in parallel (see splitCSV).
func (s CSVOrders) parts(n int) ([]OrderSource, error) {
	return splitSource(s.Path, n, func(r *byteRange) OrderSource { return CSVOrders{s.Path, r} })
}

func (s CSVPayments) parts(n int) ([]PaymentSource, error) {
	return splitSource(s.Path, n, func(r *byteRange) PaymentSource { return CSVPayments{s.Path, r} })
}

func (s CSVCoupons) parts(n int) ([]LedgerSource, error) {
	return splitSource(s.Path, n, func(r *byteRange) LedgerSource { return CSVCoupons{s.Path, r} })
}

func splitSource[T any](path string, n int, mk func(*byteRange) T) ([]T, error) {
	rs, err := splitCSV(path, n)
	if err != nil {
		return nil, err
	}
	out := make([]T, len(rs))
	for i := range rs {
		out[i] = mk(&rs[i])
	}
	return out, nil
}

// splitMinSize is the smallest file read in parts: below it one reader is
// fast enough.
var splitMinSize int64 = 64 << 20

// byteRange is the records that start in [start, end) of a file; start is
// 0 or the start of a line.
type byteRange struct{ start, end int64 }

// splitCSV cuts a file into n ranges at line starts. It returns one range
// for a small file, and for one with any quote, since a quoted line break
// could straddle a cut.
func splitCSV(path string, n int) ([]byteRange, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	whole := []byteRange{{0, size}}
	if n <= 1 || size < splitMinSize {
		return whole, nil
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		k, err := f.ReadAt(buf, off)
		if bytes.IndexByte(buf[:k], '"') >= 0 {
			return whole, nil
		}
		off += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	cuts := []int64{0}
	for i := 1; i < n; i++ {
		at := size * int64(i) / int64(n)
		k, err := f.ReadAt(buf[:64<<10], at)
		if err != nil && err != io.EOF {
			return nil, err
		}
		nl := bytes.IndexByte(buf[:k], '\n')
		if nl < 0 {
			return whole, nil // a very long line: read the file whole
		}
		if c := at + int64(nl) + 1; c > cuts[len(cuts)-1] && c < size {
			cuts = append(cuts, c)
		}
	}
	out := make([]byteRange, len(cuts))
	for i, c := range cuts {
		end := size
		if i+1 < len(cuts) {
			end = cuts[i+1]
		}
		out[i] = byteRange{c, end}
	}
	return out, nil
}

// linesBefore counts the lines that end before off, for error messages
// of a range that starts there.
func linesBefore(path string, off int64) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	buf := make([]byte, 1<<20)
	for read := int64(0); read < off && err == nil; {
		var k int
		k, err = f.ReadAt(buf[:min(int64(len(buf)), off-read)], read)
		n += bytes.Count(buf[:k], []byte{'\n'})
		read += int64(k)
	}
	return n
}

// fieldError is a bad value in a known column; scanCSV adds file and line.
type fieldError struct {
	col int // index into the source's columns
	msg string
}

func (e *fieldError) Error() string { return e.msg }

func badValue(col int, b []byte, want string) error {
	v := string(b)
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	return &fieldError{col, fmt.Sprintf("bad value %q: want %s", v, want)}
}

// ReadOrders streams the orders file.
func (s CSVOrders) ReadOrders(ctx context.Context, _ Window, emit func(*Order) error) error {
	var o Order
	return scanCSV(ctx, s.Path, s.part, OrderColumns, nil, func(f [][]byte, idx []int) error {
		var err error
		o.OrderNo = str(f[idx[0]])
		if o.OrderNo == "" {
			return &fieldError{0, "empty order_no"}
		}
		if o.UserID, err = intField(f[idx[1]], 1); err != nil {
			return err
		}
		st, ok := ParseOrderStatus(str(f[idx[2]]))
		if !ok {
			return badValue(2, f[idx[2]], "one of PENDING, PAID, CANCELLED, REFUNDED")
		}
		o.Status = st
		if o.Amount, err = amountField(f[idx[3]], 3); err != nil {
			return err
		}
		o.CouponCode = str(f[idx[4]])
		if o.Discount, err = amountField(f[idx[5]], 5); err != nil {
			return err
		}
		if o.Payable, err = amountField(f[idx[6]], 6); err != nil {
			return err
		}
		if o.UpdatedAt, err = timeField(f[idx[7]], 7); err != nil {
			return err
		}
		return emit(&o)
	})
}

// ReadPayments streams the payments file.
func (s CSVPayments) ReadPayments(ctx context.Context, _ Window, emit func(*Payment) error) error {
	var p Payment
	return scanCSV(ctx, s.Path, s.part, PaymentColumns, nil, func(f [][]byte, idx []int) error {
		var err error
		p.PaymentID = str(f[idx[0]])
		if p.PaymentID == "" {
			return &fieldError{0, "empty payment_id"}
		}
		p.OrderNo = str(f[idx[1]])
		if p.OrderNo == "" {
			return &fieldError{1, "empty order_no"}
		}
		st, ok := ParsePaymentStatus(str(f[idx[2]]))
		if !ok {
			return badValue(2, f[idx[2]], "one of FROZEN, CAPTURED, RELEASED, REFUNDED")
		}
		p.Status = st
		if p.Amount, err = amountField(f[idx[3]], 3); err != nil {
			return err
		}
		if p.UpdatedAt, err = timeField(f[idx[4]], 4); err != nil {
			return err
		}
		return emit(&p)
	})
}

// ReadLedger streams the coupon ledger file.
func (s CSVCoupons) ReadLedger(ctx context.Context, _ Window, emit func(*Entry) error) error {
	var e Entry
	return scanCSV(ctx, s.Path, s.part, CouponColumns, CouponOptional, func(f [][]byte, idx []int) error {
		var err error
		e.OrderNo = str(f[idx[0]])
		if e.OrderNo == "" {
			return &fieldError{0, "empty order_no"}
		}
		e.CouponCode = str(f[idx[1]])
		if e.CouponCode == "" {
			return &fieldError{1, "empty coupon_code"}
		}
		op, ok := ParseOp(str(f[idx[2]]))
		if !ok {
			return badValue(2, f[idx[2]], "one of LOCK, CONSUME, RELEASE, RETURN")
		}
		e.Op = op
		if e.Discount, err = amountField(f[idx[3]], 3); err != nil {
			return err
		}
		if e.UserID, err = intField(f[idx[4]], 4); err != nil {
			return err
		}
		if e.TemplateID, err = intField(f[idx[5]], 5); err != nil {
			return err
		}
		e.GID = str(f[idx[6]])
		if e.CreatedAt, err = timeField(f[idx[7]], 7); err != nil {
			return err
		}
		e.BranchID = ""
		if i := idx[8]; i >= 0 {
			e.BranchID = str(f[i])
		}
		return emit(&e)
	})
}

// str views b as a string without copying: valid only until the reader
// moves on, which is why emit functions copy what they keep.
func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func intField(b []byte, col int) (int64, error) {
	v, ok := atoi(b)
	if !ok {
		return 0, badValue(col, b, "an integer")
	}
	return v, nil
}

func amountField(b []byte, col int) (int64, error) {
	v, ok := atoi(b)
	if !ok || v < 0 {
		return 0, badValue(col, b, "a non-negative integer amount in minor units")
	}
	return v, nil
}

func timeField(b []byte, col int) (int64, error) {
	v, ok := parseTime(b)
	if !ok {
		return 0, badValue(col, b, "an RFC 3339 time such as 2026-01-02T15:04:05Z")
	}
	return v, nil
}

// atoi parses a decimal int64 with an optional sign.
func atoi(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	neg := false
	if b[0] == '-' || b[0] == '+' {
		neg = b[0] == '-'
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	if len(b) > 18 { // may overflow: let strconv decide
		v, err := strconv.ParseInt(string(b), 10, 64)
		if neg {
			v = -v
		}
		return v, err == nil
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

// parseTime reads an RFC 3339 time as Unix microseconds. The common
// shapes (…Z, …±hh:mm, with or without a fraction) are decoded by hand,
// which is several times faster than time.Parse; anything else goes to it.
func parseTime(b []byte) (int64, bool) {
	if us, ok := fastTime(b); ok {
		return us, true
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return 0, false
	}
	return t.UnixMicro(), true
}

func fastTime(b []byte) (int64, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return 0, false
	}
	num := func(i, n int) int64 {
		var v int64
		for _, c := range b[i : i+n] {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int64(c-'0')
		}
		return v
	}
	y, mo, d, h, mi, s := num(0, 4), num(5, 2), num(8, 2), num(11, 2), num(14, 2), num(17, 2)
	if y < 0 || mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 59 {
		return 0, false
	}
	i := 19
	var frac int64
	if b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if i-start < 6 {
				frac = frac*10 + int64(b[i]-'0')
			}
			i++
		}
		n := i - start
		if n == 0 || n > 9 {
			return 0, false
		}
		for ; n < 6; n++ {
			frac *= 10
		}
	}
	var off int64
	switch {
	case i == len(b)-1 && (b[i] == 'Z' || b[i] == 'z'):
	case i == len(b)-6 && (b[i] == '+' || b[i] == '-') && b[i+3] == ':':
		oh, om := num(i+1, 2), num(i+4, 2)
		if oh < 0 || oh > 23 || om < 0 || om > 59 {
			return 0, false
		}
		off = (oh*60 + om) * 60
		if b[i] == '-' {
			off = -off
		}
	default:
		return 0, false
	}
	days := daysFromCivil(y, mo, d)
	return ((days*86400+h*3600+mi*60+s)-off)*1_000_000 + frac, true
}

func daysIn(y, m int64) int64 {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil is Howard Hinnant's days-from-civil: days since 1970-01-01.
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// scanCSV reads path's header, finds the required (and optional) columns
// and calls fn for every record with the field index of each column
// (required first, then optional; -1 for an absent optional column).
// Errors name the file, the line and the column.
func scanCSV(ctx context.Context, path string, part *byteRange, required, optional []string, fn func(fields [][]byte, idx []int) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	r := newCSVReader(f)
	hdr, err := r.read()
	if err == io.EOF {
		return fmt.Errorf("%s:1: bad header: the file is empty", path)
	}
	if err != nil {
		return fmt.Errorf("%s:%d: %w", path, r.line, err)
	}
	idx, err := headerIndex(hdr, required, optional)
	if err != nil {
		return fmt.Errorf("%s:1: %w", path, err)
	}
	cols := append(append([]string(nil), required...), optional...)
	width := len(hdr)
	end := int64(1<<63 - 1)
	if part != nil && part.start > 0 {
		// A later range: its own reader from its first line on.
		if _, err := f.Seek(part.start, io.SeekStart); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		r = newCSVReader(f)
		r.off = part.start
	}
	if part != nil {
		end = part.end
	}
	lineOf := func() int {
		if part != nil && part.start > 0 {
			return linesBefore(path, part.start) + r.line
		}
		return r.line
	}
	for n := 0; ; n++ {
		if r.off >= end {
			return nil
		}
		if n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		rec, err := r.read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s:%d: %w", path, lineOf(), err)
		}
		if len(rec) == 1 && len(rec[0]) == 0 {
			continue // blank line
		}
		if len(rec) != width {
			return fmt.Errorf("%s:%d: %d fields, the header has %d", path, lineOf(), len(rec), width)
		}
		if err := fn(rec, idx); err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				return fmt.Errorf("%s:%d: column %d %q: %s", path, lineOf(), idx[fe.col]+1, cols[fe.col], fe.msg)
			}
			return err
		}
	}
}

func headerIndex(hdr [][]byte, required, optional []string) ([]int, error) {
	pos := map[string]int{}
	for i, h := range hdr {
		name := strings.TrimSpace(string(h))
		if i == 0 {
			name = strings.TrimPrefix(name, "\uFEFF")
		}
		if name == "" {
			continue
		}
		if _, dup := pos[name]; dup {
			return nil, fmt.Errorf("bad header: column %q appears twice", name)
		}
		pos[name] = i
	}
	idx := make([]int, 0, len(required)+len(optional))
	var missing []string
	for _, c := range required {
		i, ok := pos[c]
		if !ok {
			missing = append(missing, c)
		}
		idx = append(idx, i)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("bad header: missing column %s (want %s)", quoteAll(missing), strings.Join(required, ","))
	}
	for _, c := range optional {
		i, ok := pos[c]
		if !ok {
			i = -1
		}
		idx = append(idx, i)
	}
	return idx, nil
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// csvReader reads RFC 4180 records. Lines without a quote, nearly all of
// them, are split in place in the bufio buffer; quoted records (which may
// span lines) are unquoted into a buffer of their own. Fields are valid
// until the next read.
type csvReader struct {
	r *bufio.Reader
	// off is the file offset of the next line.
	off    int64
	line   int // line where the last record started
	next   int // lines read so far
	fields [][]byte
	long   []byte // a line longer than the bufio buffer
	quoted []byte
}

func newCSVReader(r io.Reader) *csvReader {
	return &csvReader{r: bufio.NewReaderSize(r, 1<<20)}
}

// readLine returns the next line without its line ending.
func (c *csvReader) readLine() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		c.long = append(c.long[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = c.r.ReadSlice('\n')
			c.long = append(c.long, line...)
		}
		line = c.long
	}
	if len(line) == 0 && err != nil {
		return nil, err
	}
	c.off += int64(len(line))
	c.next++
	if err != nil && err != io.EOF {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	return line, nil
}

func (c *csvReader) read() ([][]byte, error) {
	line, err := c.readLine()
	if err != nil {
		return nil, err
	}
	c.line = c.next
	c.fields = c.fields[:0]
	if bytes.IndexByte(line, '"') < 0 {
		for {
			i := bytes.IndexByte(line, ',')
			if i < 0 {
				c.fields = append(c.fields, line)
				return c.fields, nil
			}
			c.fields = append(c.fields, line[:i])
			line = line[i+1:]
		}
	}
	return c.readQuoted(line)
}

// readQuoted parses a record with quotes, reading further lines while a
// quoted field is open.
func (c *csvReader) readQuoted(line []byte) ([][]byte, error) {
	c.quoted = c.quoted[:0]
	var ends []int // end offset in c.quoted of every field
	i := 0
	for {
		// At the start of a field.
		if i < len(line) && line[i] == '"' {
			i++
			for {
				j := bytes.IndexByte(line[i:], '"')
				if j < 0 { // the field goes on past the line end
					c.quoted = append(c.quoted, line[i:]...)
					c.quoted = append(c.quoted, '\n')
					// line came from the bufio buffer; the copy above is done
					next, err := c.readLine()
					if err == io.EOF {
						return nil, errors.New("quoted field not closed before the end of the file")
					}
					if err != nil {
						return nil, err
					}
					line, i = next, 0
					continue
				}
				c.quoted = append(c.quoted, line[i:i+j]...)
				i += j + 1
				if i < len(line) && line[i] == '"' {
					c.quoted = append(c.quoted, '"')
					i++
					continue
				}
				break
			}
			ends = append(ends, len(c.quoted))
			switch {
			case i == len(line):
				return c.split(ends), nil
			case line[i] == ',':
				i++
			default:
				return nil, fmt.Errorf("bad quoting: %q after a closing quote", line[i])
			}
			continue
		}
		j := bytes.IndexByte(line[i:], ',')
		field := line[i:]
		if j >= 0 {
			field = line[i : i+j]
		}
		if bytes.IndexByte(field, '"') >= 0 {
			return nil, errors.New(`bad quoting: a quote inside an unquoted field`)
		}
		c.quoted = append(c.quoted, field...)
		ends = append(ends, len(c.quoted))
		if j < 0 {
			return c.split(ends), nil
		}
		i += j + 1
	}
}

func (c *csvReader) split(ends []int) [][]byte {
	start := 0
	for _, e := range ends {
		c.fields = append(c.fields, c.quoted[start:e:e])
		start = e
	}
	return c.fields
}
