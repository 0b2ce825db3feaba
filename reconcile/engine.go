package reconcile

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Window is the part of the books one run judges, in Unix microseconds:
// records in [Start, End) and not after AsOf.
type Window struct {
	Start, End, AsOf int64
}

// The three ledgers are read through these ports; emit copies what it
// keeps before it returns, so a source may reuse its record and buffers.
// A source may return rows outside the window: the engine filters.
type (
	OrderSource interface {
		ReadOrders(ctx context.Context, w Window, emit func(*Order) error) error
	}
	PaymentSource interface {
		ReadPayments(ctx context.Context, w Window, emit func(*Payment) error) error
	}
	LedgerSource interface {
		ReadLedger(ctx context.Context, w Window, emit func(*Entry) error) error
	}
)

// Sources are one run's inputs.
type Sources struct {
	Orders   OrderSource
	Payments PaymentSource
	Ledger   LedgerSource
}

// Options configure one run. Date is the day judged, a midnight in Zone.
type Options struct {
	Date time.Time
	// AsOf is when the books are judged; zero means the end of the day.
	AsOf time.Time
	// Grace: an order whose latest record is this close to AsOf is in flight.
	Grace time.Duration
	// PendingDays: an order pending this many days is judged anyway.
	PendingDays int
	// SpillDir holds the partition files (a temporary directory is made
	// inside it and removed); default os.TempDir().
	SpillDir string
	// Partitions of the first split (default 256); a partition file
	// larger than MaxPartition (default 24 MiB) is split again.
	Partitions   int
	MaxPartition int64
	// Workers join partitions in parallel (default GOMAXPROCS).
	Workers int
	// Carried is the previous run's pending, re-checked in this run.
	Carried []Pending
	// Resolved maps findings repaired earlier to their resolution.
	Resolved map[Key]string
	// TopN findings by money at risk are kept in the Result (default 20,000).
	TopN     int
	Progress Progress
}

// Outputs receive the findings and pending orders as JSON lines.
type Outputs struct {
	Discrepancies io.Writer
	Pending       io.Writer
}

// ClassTotal sums the findings of one class.
type ClassTotal struct {
	Count        int64 `json:"count"`
	Open         int64 `json:"open"`
	Resolved     int64 `json:"resolved"`
	AmountAtRisk int64 `json:"amount_at_risk"`
}

// Rows counts what the sources returned and what was in the window.
type Rows struct {
	Orders   int64 `json:"orders"`
	Payments int64 `json:"payments"`
	Ledger   int64 `json:"ledger"`
	InWindow int64 `json:"in_window"`
	Carried  int64 `json:"carried"`
}

// Result summarises a run.
type Result struct {
	Date   string                 `json:"date"`
	Start  time.Time              `json:"start"`
	End    time.Time              `json:"end"`
	AsOf   time.Time              `json:"as_of"`
	Grace  string                 `json:"grace"`
	Rows   Rows                   `json:"rows"`
	Totals map[string]*ClassTotal `json:"totals"`
	// Findings counts all findings; Open those not resolved by a repair.
	Findings int64 `json:"findings"`
	Open     int64 `json:"open"`
	Resolved int64 `json:"resolved"`
	// MoneyAtRisk sums AmountAtRisk over the open findings.
	MoneyAtRisk int64         `json:"money_at_risk"`
	Pending     int64         `json:"pending"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	// ReadElapsed is the part of Elapsed spent reading the sources into
	// partitions; the rest is joining them.
	ReadElapsed time.Duration `json:"read_elapsed_ns"`
	// Top holds the findings with the most money at risk, most first.
	Top []Finding `json:"-"`
	// TopTruncated is set when Top holds fewer than Findings.
	TopTruncated bool `json:"-"`
	// Repaired lists the repairs applied for this date by earlier runs:
	// resolved, whether or not their finding still shows in this run.
	Repaired []Repaired `json:"repaired,omitempty"`
}

// Repaired is a finding of the date resolved by an applied repair.
type Repaired struct {
	Key
	Resolution string
}

// Day returns midnight of date (YYYY-MM-DD) in zone.
func Day(date string, zone *time.Location) (time.Time, error) {
	d, err := time.ParseInLocation(time.DateOnly, date, zone)
	if err != nil {
		return time.Time{}, fmt.Errorf("date %q: want YYYY-MM-DD", date)
	}
	return d, nil
}

// dayNumber is a civil date's days since 1970-01-01.
func dayNumber(t time.Time) int32 {
	y, m, d := t.Date()
	return int32(daysFromCivil(int64(y), int64(m), int64(d)))
}

func dayOfNumber(n int32) string {
	return time.Unix(int64(n)*86400, 0).UTC().Format(time.DateOnly)
}

// window checks the options and returns the run's window.
func (o *Options) window() (Window, error) {
	if o.Date.IsZero() {
		return Window{}, errors.New("no date")
	}
	start := o.Date
	end := start.AddDate(0, 0, 1)
	asOf := o.AsOf
	if asOf.IsZero() {
		asOf = end
	}
	if !asOf.After(start) || asOf.After(end) {
		return Window{}, fmt.Errorf("as-of %s is outside the day (%s, %s]", asOf.Format(time.RFC3339), start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	if o.Grace < 0 {
		return Window{}, fmt.Errorf("grace %s is negative", o.Grace)
	}
	return Window{Start: Micros(start), End: Micros(end), AsOf: Micros(asOf)}, nil
}

// Reconcile runs the three-way match: it reads the sources into hash
// partitions by order number on disk, joins each partition in memory,
// then checks coupons used twice from partitions by coupon code. Findings
// and pending orders are written to out as they are decided; partition by
// partition, each sorted by order number, so the output is deterministic.
func Reconcile(ctx context.Context, opts Options, src Sources, out Outputs) (*Result, error) {
	began := time.Now()
	w, err := opts.window()
	if err != nil {
		return nil, err
	}
	if src.Orders == nil || src.Payments == nil || src.Ledger == nil {
		return nil, errors.New("reconcile needs order, payment and coupon sources")
	}
	if opts.Partitions <= 0 {
		opts.Partitions = 256
	}
	if opts.MaxPartition <= 0 {
		opts.MaxPartition = 24 << 20
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.TopN <= 0 {
		opts.TopN = 20000
	}
	if opts.Progress == nil {
		opts.Progress = NoProgress{}
	}
	if opts.SpillDir == "" {
		opts.SpillDir = os.TempDir()
	}
	dir, err := os.MkdirTemp(opts.SpillDir, "reconcile-spill-")
	if err != nil {
		return nil, fmt.Errorf("spill directory: %w", err)
	}
	defer os.RemoveAll(dir)

	res := &Result{
		Date: opts.Date.Format(time.DateOnly), Start: FromMicros(w.Start), End: FromMicros(w.End), AsOf: FromMicros(w.AsOf),
		Grace: opts.Grace.String(), Totals: map[string]*ClassTotal{},
	}
	for _, c := range Classes {
		res.Totals[c] = &ClassTotal{}
	}
	for k, r := range opts.Resolved {
		res.Repaired = append(res.Repaired, Repaired{k, r})
	}
	slices.SortFunc(res.Repaired, func(a, b Repaired) int {
		return cmp.Or(strings.Compare(a.Class, b.Class), strings.Compare(a.OrderNo, b.OrderNo), strings.Compare(a.CouponCode, b.CouponCode))
	})
	orders, err := newSpill(dir, "order", opts.Partitions, 1)
	if err != nil {
		return nil, err
	}
	uses, err := newSpill(dir, "use", max(opts.Partitions/4, 1), 1)
	if err != nil {
		orders.close()
		return nil, err
	}
	if err := readAll(ctx, &opts, w, src, orders, uses, res); err != nil {
		orders.close()
		uses.close()
		return nil, err
	}
	if err := errors.Join(orders.close(), uses.close()); err != nil {
		return nil, err
	}
	res.ReadElapsed = time.Since(began)

	c := newCollector(&opts, out, res)
	j := judgement{asOf: w.AsOf, grace: opts.Grace.Microseconds(), today: dayNumber(opts.Date), pendingDays: int32(max(opts.PendingDays, 1))}
	opts.Progress.Phase("joining partitions", int64(len(orders.parts)+len(uses.parts)))
	err = forEachPart(ctx, opts.Workers, orders, dir, opts.MaxPartition, c, func(jn *joiner, buf []byte) (*partResult, error) {
		return jn.joinOrders(&j, buf)
	})
	if err == nil {
		err = forEachPart(ctx, opts.Workers, uses, dir, opts.MaxPartition, c, func(jn *joiner, buf []byte) (*partResult, error) {
			return jn.joinUses(buf)
		})
	}
	if err != nil {
		return nil, err
	}
	if c.err != nil {
		return nil, c.err
	}
	c.finish()
	opts.Progress.Done()
	res.Elapsed = time.Since(began)
	return res, nil
}

// readAll streams the carried pending and the three sources into the spills.
func readAll(ctx context.Context, opts *Options, w Window, src Sources, orders, uses *spill, res *Result) error {
	var inWindow atomic.Int64
	// The carried records go first, so that within an order they come
	// before the window's rows of the same instant.
	ob, ub := orders.buffer(), uses.buffer()
	for i := range opts.Carried {
		p := &opts.Carried[i]
		since, err := Day(p.Since, time.UTC)
		if err != nil {
			return fmt.Errorf("pending order %s: since: %w", p.OrderNo, err)
		}
		if err := ob.since(p.OrderNo, dayNumber(since)); err != nil {
			return err
		}
		o, ps, es := p.Records.records()
		if o != nil {
			if err := ob.order(o, tagOrder); err != nil {
				return err
			}
		}
		for k := range ps {
			if err := ob.payment(&ps[k], tagPayment); err != nil {
				return err
			}
		}
		for k := range es {
			e := &es[k]
			if err := ob.entry(e); err != nil {
				return err
			}
			if e.Op == OpConsume || e.Op == OpReturn {
				if err := ub.use(e, true); err != nil {
					return err
				}
			}
		}
		res.Rows.Carried++
	}
	if err := errors.Join(ob.flush(), ub.flush()); err != nil {
		return err
	}

	prog := opts.Progress
	prog.Phase("reading ledgers", -1)
	// Counts stay in each producer's buffer: shared counters would bounce
	// a cache line between the cores on every row.
	tick := func(b *spillBuf) {
		if b.rows++; b.rows&8191 == 0 {
			prog.Add(8192)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	// state files an order or payment row by its time: one updated after
	// the day (or as-of) only marks its order changed, one from before the
	// day may complete an order that has rows in the window.
	state := func(b *spillBuf, t int64, orderNo string, tag, oldTag byte, write func(tag byte) error) error {
		tick(b)
		switch {
		case t >= w.End || t > w.AsOf:
			return b.changed(orderNo)
		case t < w.Start:
			return write(oldTag)
		}
		b.inWindow++
		return write(tag)
	}
	// A CSV file is read in as many ranges as there are workers, so the
	// largest file does not leave a core idle at the end.
	orderSrcs, err := partsOf(src.Orders, opts.Workers)
	if err != nil {
		return err
	}
	paymentSrcs, err := partsOf(src.Payments, opts.Workers)
	if err != nil {
		return err
	}
	ledgerSrcs, err := partsOf(src.Ledger, opts.Workers)
	if err != nil {
		return err
	}
	var nOrders, nPayments, nLedger atomic.Int64
	done := func(b *spillBuf, n *atomic.Int64, what string, err error) error {
		inWindow.Add(b.inWindow)
		n.Add(b.rows)
		if err != nil {
			return fmt.Errorf("read %s: %w", what, err)
		}
		return b.flush()
	}
	for _, osrc := range orderSrcs {
		g.Go(func() error {
			b := orders.buffer()
			err := osrc.ReadOrders(gctx, w, func(o *Order) error {
				return state(b, o.UpdatedAt, o.OrderNo, tagOrder, tagOldOrder, func(tag byte) error { return b.order(o, tag) })
			})
			return done(b, &nOrders, "orders", err)
		})
	}
	for _, ps := range paymentSrcs {
		g.Go(func() error {
			b := orders.buffer()
			err := ps.ReadPayments(gctx, w, func(p *Payment) error {
				return state(b, p.UpdatedAt, p.OrderNo, tagPayment, tagOldPayment, func(tag byte) error { return b.payment(p, tag) })
			})
			return done(b, &nPayments, "payments", err)
		})
	}
	for _, ls := range ledgerSrcs {
		g.Go(func() error {
			b, u := orders.buffer(), uses.buffer()
			err := ls.ReadLedger(gctx, w, func(e *Entry) error {
				tick(b)
				if t := e.CreatedAt; t < w.Start || t >= w.End || t > w.AsOf {
					return nil // the ledger is append-only: the row did not exist at as-of
				}
				b.inWindow++
				if err := b.entry(e); err != nil {
					return err
				}
				if e.Op == OpConsume || e.Op == OpReturn {
					return u.use(e, false)
				}
				return nil
			})
			if err == nil {
				err = u.flush()
			}
			return done(b, &nLedger, "coupon ledger", err)
		})
	}
	err = g.Wait()
	res.Rows.InWindow = inWindow.Load()
	res.Rows.Orders, res.Rows.Payments, res.Rows.Ledger = nOrders.Load(), nPayments.Load(), nLedger.Load()
	return err
}

// partsOf splits a source that can be read in parts (CSV files).
func partsOf[T any](src T, n int) ([]T, error) {
	if p, ok := any(src).(interface{ parts(int) ([]T, error) }); ok {
		return p.parts(n)
	}
	return []T{src}, nil
}

// partResult is what one partition decided, ready to write.
type partResult struct {
	findings []Finding // strings cloned
	pending  []byte    // JSON lines
	npending int64
}

// forEachPart runs fn over every partition of s with workers goroutines,
// splitting partitions larger than maxPart, and hands the results to c in
// partition order.
func forEachPart(ctx context.Context, workers int, s *spill, dir string, maxPart int64, c *collector, fn func(*joiner, []byte) (*partResult, error)) error {
	c.reset(len(s.parts))
	next := atomic.Int64{}
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			jn := newJoiner()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(s.parts) || gctx.Err() != nil {
					return gctx.Err()
				}
				r, err := jn.part(s.parts[i].path, s.parts[i].size, dir, maxPart, 2, fn)
				if err != nil {
					return err
				}
				_ = os.Remove(s.parts[i].path)
				if err := c.put(i, r); err != nil {
					return err
				}
			}
		})
	}
	return g.Wait()
}

// part processes one partition file, splitting it first when too large.
func (jn *joiner) part(path string, size int64, dir string, maxPart int64, seed uint64, fn func(*joiner, []byte) (*partResult, error)) (*partResult, error) {
	if size > maxPart && seed < 8 {
		sub, err := resplit(path, dir, filepath.Base(path)+"-s", 16, seed)
		if err != nil {
			return nil, err
		}
		all := &partResult{}
		for _, p := range sub.parts {
			r, err := jn.part(p.path, p.size, dir, maxPart, seed+1, fn)
			_ = os.Remove(p.path)
			if err != nil {
				return nil, err
			}
			all.findings = append(all.findings, r.findings...)
			all.pending = append(all.pending, r.pending...)
			all.npending += r.npending
		}
		return all, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open spill file: %w", err)
	}
	defer f.Close()
	if int64(cap(jn.buf)) < size {
		jn.buf = make([]byte, size)
	}
	jn.buf = jn.buf[:size]
	if _, err := io.ReadFull(f, jn.buf); err != nil {
		return nil, fmt.Errorf("read spill file: %w", err)
	}
	return fn(jn, jn.buf)
}

// joiner holds one worker's reusable state.
type joiner struct {
	buf      []byte
	index    map[string]int32
	views    []view
	orderIdx []int32
	old      []bool // the view has only rows from before the window
	orders   []Order
	payments []Payment
	payOwner []int32
	entries  []Entry
	entOwner []int32
	paySort  []Payment
	entSort  []Entry
	counts   []int32
	found    []Finding
	uses     []use
	useOwner []int32
	useSort  []use
	codes    []string
}

func newJoiner() *joiner { return &joiner{index: map[string]int32{}} }

func (jn *joiner) reset() {
	clear(jn.index)
	jn.views, jn.orderIdx, jn.old = jn.views[:0], jn.orderIdx[:0], jn.old[:0]
	jn.orders, jn.payments, jn.payOwner = jn.orders[:0], jn.payments[:0], jn.payOwner[:0]
	jn.entries, jn.entOwner, jn.found = jn.entries[:0], jn.entOwner[:0], jn.found[:0]
	jn.uses, jn.useOwner, jn.codes = jn.uses[:0], jn.useOwner[:0], jn.codes[:0]
}

func (jn *joiner) viewOf(key string) int32 {
	if i, ok := jn.index[key]; ok {
		return i
	}
	i := int32(len(jn.views))
	jn.index[key] = i
	jn.views = append(jn.views, view{orderNo: key})
	jn.orderIdx = append(jn.orderIdx, -1)
	jn.old = append(jn.old, true)
	return i
}

// joinOrders joins one order partition.
func (jn *joiner) joinOrders(j *judgement, buf []byte) (*partResult, error) {
	jn.reset()
	err := records(buf, func(rec []byte) error {
		d := decoder{b: rec[1:]}
		tag := rec[0]
		vi := jn.viewOf(d.str())
		switch tag {
		case tagOrder, tagOldOrder:
			o := Order{OrderNo: jn.views[vi].orderNo, UserID: d.int(), Status: OrderStatus(d.byte()), Amount: d.int(),
				CouponCode: d.str(), Discount: d.int(), Payable: d.int(), UpdatedAt: d.int()}
			// The latest row wins; of two at one instant the later status,
			// whatever order the sources' parts delivered them in.
			if k := jn.orderIdx[vi]; k < 0 || o.UpdatedAt > jn.orders[k].UpdatedAt ||
				o.UpdatedAt == jn.orders[k].UpdatedAt && o.Status >= jn.orders[k].Status {
				jn.orderIdx[vi] = int32(len(jn.orders))
				jn.orders = append(jn.orders, o)
			}
		case tagPayment, tagOldPayment:
			jn.payments = append(jn.payments, Payment{OrderNo: jn.views[vi].orderNo, PaymentID: d.str(), Status: PaymentStatus(d.byte()),
				Amount: d.int(), UpdatedAt: d.int()})
			jn.payOwner = append(jn.payOwner, vi)
		case tagEntry:
			jn.entries = append(jn.entries, Entry{OrderNo: jn.views[vi].orderNo, CouponCode: d.str(), Op: Op(d.byte()), Discount: d.int(),
				UserID: d.int(), TemplateID: d.int(), GID: d.str(), BranchID: d.str(), CreatedAt: d.int()})
			jn.entOwner = append(jn.entOwner, vi)
		case tagSince:
			jn.views[vi].since = int32(d.int())
		case tagChanged:
			jn.views[vi].changed = true
			return nil
		default:
			return errCorruptSpill
		}
		if tag != tagOldOrder && tag != tagOldPayment {
			jn.old[vi] = false
		}
		if d.bad {
			return errCorruptSpill
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := len(jn.views)
	jn.paySort = groupBy(jn.payments, jn.payOwner, n, &jn.counts, jn.paySort)
	payOff := slices.Clone(jn.counts)
	jn.entSort = groupBy(jn.entries, jn.entOwner, n, &jn.counts, jn.entSort)
	entOff := jn.counts
	r := &partResult{}
	for i := range jn.views {
		v := &jn.views[i]
		if jn.old[i] {
			continue // nothing of it in the window (or only a later change)
		}
		if k := jn.orderIdx[i]; k >= 0 {
			v.order = &jn.orders[k]
		}
		v.payments = jn.paySort[payOff[i]:payOff[i+1]:payOff[i+1]]
		v.entries = jn.entSort[entOff[i]:entOff[i+1]:entOff[i+1]]
		before := len(jn.found)
		var reason string
		jn.found, reason = j.judge(v, jn.found)
		if reason != "" {
			line, err := json.Marshal(pendingOf(v, reason, j.today))
			if err != nil {
				return nil, err
			}
			r.pending = append(append(r.pending, line...), '\n')
			r.npending++
		} else if v.since != 0 {
			for k := before; k < len(jn.found); k++ {
				jn.found[k].Detail += fmt.Sprintf(" (pending since %s)", dayOfNumber(v.since))
			}
		}
	}
	r.findings = cloneFindings(jn.found)
	return r, nil
}

// groupBy orders items by owner (stable) with a counting sort; counts
// becomes the n+1 group offsets.
func groupBy[T any](items []T, owner []int32, n int, counts *[]int32, dst []T) []T {
	c := slices.Grow((*counts)[:0], n+1)[:n+1]
	clear(c)
	for _, o := range owner {
		c[o+1]++
	}
	for i := 1; i <= n; i++ {
		c[i] += c[i-1]
	}
	dst = slices.Grow(dst[:0], len(items))[:len(items)]
	pos := slices.Clone(c[:n])
	for i, o := range owner {
		dst[pos[o]] = items[i]
		pos[o]++
	}
	*counts = c
	return dst
}

func pendingOf(v *view, reason string, today int32) *Pending {
	p := &Pending{OrderNo: v.orderNo, Since: dayOfNumber(today), Latest: FromMicros(v.latest()), Reason: reason}
	if v.since != 0 {
		p.Since = dayOfNumber(v.since)
	}
	if v.order != nil {
		p.Records.Order = orderJSON(v.order)
	}
	for i := range v.payments {
		p.Records.Payments = append(p.Records.Payments, paymentJSON(&v.payments[i]))
	}
	for i := range v.entries {
		p.Records.Ledger = append(p.Records.Ledger, entryJSON(&v.entries[i]))
	}
	return p
}

func cloneFindings(fs []Finding) []Finding {
	out := make([]Finding, len(fs))
	for i, f := range fs {
		f.OrderNo, f.CouponCode = strings.Clone(f.OrderNo), strings.Clone(f.CouponCode)
		f.GID, f.BranchID = strings.Clone(f.GID), strings.Clone(f.BranchID)
		f.Orders = slices.Clone(f.Orders)
		for k := range f.Orders {
			f.Orders[k] = strings.Clone(f.Orders[k])
		}
		out[i] = f
	}
	slices.SortFunc(out, func(a, b Finding) int {
		return cmp.Or(strings.Compare(a.OrderNo, b.OrderNo), strings.Compare(a.Class, b.Class), strings.Compare(a.CouponCode, b.CouponCode))
	})
	return out
}

// joinUses checks one coupon partition for coupons used twice.
func (jn *joiner) joinUses(buf []byte) (*partResult, error) {
	jn.reset()
	err := records(buf, func(rec []byte) error {
		if rec[0] != tagUse {
			return errCorruptSpill
		}
		d := decoder{b: rec[1:]}
		vi := jn.viewOf(d.str())
		jn.uses = append(jn.uses, use{orderNo: d.str(), op: Op(d.byte()), discount: d.int(), at: d.int(), carried: d.byte() == 1})
		jn.useOwner = append(jn.useOwner, vi)
		if d.bad {
			return errCorruptSpill
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := len(jn.views)
	jn.useSort = groupBy(jn.uses, jn.useOwner, n, &jn.counts, jn.useSort)
	for i := range jn.views {
		us := jn.useSort[jn.counts[i]:jn.counts[i+1]]
		if len(us) < 2 {
			continue
		}
		// At one instant a return frees the coupon before another use.
		slices.SortStableFunc(us, func(a, b use) int {
			return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(opRank[b.op], opRank[a.op]), strings.Compare(a.orderNo, b.orderNo))
		})
		if f, ok := usedTwice(jn.views[i].orderNo, us); ok {
			jn.found = append(jn.found, f)
		}
	}
	return &partResult{findings: cloneFindings(jn.found)}, nil
}

// collector writes partition results in partition order and keeps totals.
type collector struct {
	mu      sync.Mutex
	opts    *Options
	out     Outputs
	res     *Result
	next    int
	waiting map[int]*partResult
	top     topHeap
	err     error
}

func newCollector(opts *Options, out Outputs, res *Result) *collector {
	return &collector{opts: opts, out: out, res: res, waiting: map[int]*partResult{}}
}

func (c *collector) reset(int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next = 0
	clear(c.waiting)
}

func (c *collector) put(i int, r *partResult) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts.Progress.Add(1)
	c.waiting[i] = r
	for {
		r, ok := c.waiting[c.next]
		if !ok {
			return c.err
		}
		delete(c.waiting, c.next)
		c.next++
		if c.err == nil {
			c.err = c.write(r)
		}
	}
}

func (c *collector) write(r *partResult) error {
	for i := range r.findings {
		f := &r.findings[i]
		t := c.res.Totals[f.Class]
		t.Count++
		c.res.Findings++
		if res, ok := c.opts.Resolved[f.Key()]; ok {
			f.Resolution = res
			t.Resolved++
			c.res.Resolved++
		} else {
			t.Open++
			t.AmountAtRisk += f.AmountAtRisk
			c.res.Open++
			c.res.MoneyAtRisk += f.AmountAtRisk
		}
		line, err := json.Marshal(f)
		if err != nil {
			return err
		}
		if _, err := c.out.Discrepancies.Write(append(line, '\n')); err != nil {
			return fmt.Errorf("write discrepancies: %w", err)
		}
		c.top.offer(*f, c.opts.TopN)
	}
	if len(r.pending) > 0 {
		if _, err := c.out.Pending.Write(r.pending); err != nil {
			return fmt.Errorf("write pending: %w", err)
		}
		c.res.Pending += r.npending
	}
	return nil
}

func (c *collector) finish() {
	c.res.TopTruncated = int64(len(c.top)) < c.res.Findings
	top := []Finding(c.top)
	slices.SortFunc(top, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(b.AmountAtRisk, a.AmountAtRisk), strings.Compare(a.Class, b.Class), strings.Compare(a.OrderNo, b.OrderNo))
	})
	c.res.Top = top
}

// topHeap is a min-heap by money at risk of the findings kept for the report.
type topHeap []Finding

func (h topHeap) Len() int           { return len(h) }
func (h topHeap) Less(i, j int) bool { return h[i].AmountAtRisk < h[j].AmountAtRisk }
func (h topHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *topHeap) Push(x any)        { *h = append(*h, x.(Finding)) }
func (h *topHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (h *topHeap) offer(f Finding, n int) {
	if len(*h) < n {
		heap.Push(h, f)
		return
	}
	if f.AmountAtRisk > (*h)[0].AmountAtRisk {
		(*h)[0] = f
		heap.Fix(h, 0)
	}
}
