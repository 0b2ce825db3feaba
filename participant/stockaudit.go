package participant

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/opencoupon/coupon/internal/jobs"
)

// AuditStats counts what an Auditor has done since it was made.
type AuditStats struct {
	Rounds  int64 // rounds run while holding the lease
	Checked int64 // templates compared
	// OverCredit counts repairs of counters that held more than total −
	// issued: the excess was taken off at once.
	OverCredit int64
	// UnderCredit counts repairs of counters that held less, seen
	// unchanged for a settle window: they were rebuilt.
	UnderCredit int64
	Failed      int64 // template checks that failed
	// LastRound is when the last round run on this replica ended without
	// error (zero: none yet); its age is the audit's lag.
	LastRound time.Time
}

const (
	// maxTakeOff is the largest excess taken off unit by unit; a larger
	// one drops the counters (taking everything off at once) and rebuilds.
	maxTakeOff = 1000
	// maxRebuilds caps the rebuilds of one round: each waits StockSettle.
	maxRebuilds = 4
)

// Auditor compares each ACTIVE and PAUSED template's live counters with
// total − issued from MySQL and repairs drift, e.g. after a crash between
// the two stores.
//
// Claims in flight have taken from the counters but not yet committed, so
// at any moment remaining ≤ total − issued even with no drift. Reading
// issued first, then the counters, then total keeps that true across the
// reads (issued and total only grow, and AddStock raises total before the
// counters), so remaining > total − issued is real over-credit: it would
// oversell, and the excess is taken off at once. Taking off is always safe.
//
// Remaining < total − issued is under-credit (an AddStock whose counter
// update was lost, a commit whose outcome was unknown): it only costs
// coupons, and it looks the same as claims in flight. It is repaired only
// when the same total, issued and remaining are seen for a whole settle
// window: issued unchanged means nothing committed, and every claim in
// flight at the start has ended by then. The repair is a rebuild (drop the
// counters, wait StockSettle, count, set), which is correct whatever is in
// flight.
type Auditor struct {
	svc *Service
	job *jobs.Job

	// drift holds, per template, the under-credit seen unchanged since
	// when. Only rounds touch it, and job runs one at a time.
	drift map[int64]driftSeen

	rounds, checked, over, under, failed atomic.Int64
}

type stockReading struct {
	total, issued, remaining int64
	subKeys                  int32
}

type driftSeen struct {
	stockReading
	since time.Time
}

// NewAuditor returns the stock audit of svc. It runs every
// Config.AuditInterval once Run is called.
func NewAuditor(svc *Service) *Auditor {
	a := &Auditor{svc: svc, drift: map[int64]driftSeen{}}
	longest := 30*time.Second + (maxRebuilds+1)*svc.cfg.StockSettle
	a.job = svc.job("stock audit", "job:audit", svc.cfg.AuditInterval, longest, a.round)
	return a
}

// Run audits every interval until ctx is done, then gives up the lease.
func (a *Auditor) Run(ctx context.Context) { a.job.Run(ctx) }

// RunOnce runs one audit if this Auditor holds, or can take, the lease;
// ran is false when another replica holds it.
func (a *Auditor) RunOnce(ctx context.Context) (ran bool, err error) { return a.job.RunOnce(ctx) }

// Stats returns the counters so far.
func (a *Auditor) Stats() AuditStats {
	return AuditStats{
		Rounds: a.rounds.Load(), Checked: a.checked.Load(),
		OverCredit: a.over.Load(), UnderCredit: a.under.Load(), Failed: a.failed.Load(), LastRound: a.job.LastRound(),
	}
}

func (a *Auditor) round(ctx context.Context) error {
	a.rounds.Add(1)
	seen := map[int64]bool{}
	rebuilds := 0
	for _, status := range []TemplateStatus{TemplateActive, TemplatePaused} {
		p := Page{Size: 200}
		for {
			ts, next, err := a.svc.catalog.ListTemplates(ctx, 0, status, p)
			if err != nil {
				return fmt.Errorf("list %s templates: %w", templateStatusName(status), err)
			}
			for _, t := range ts {
				seen[t.ID] = true
				if err := a.check(ctx, t, &rebuilds); err != nil {
					if ctx.Err() != nil {
						return err
					}
					a.failed.Add(1)
					a.svc.log.WarnContext(ctx, "stock audit", "template_id", t.ID, "err", err)
				}
			}
			if next == "" {
				break
			}
			p.After = next
		}
	}
	for id := range a.drift {
		if !seen[id] {
			delete(a.drift, id)
		}
	}
	return nil
}

// check compares one template's counters with its records.
func (a *Auditor) check(ctx context.Context, t *Template, rebuilds *int) error {
	s := a.svc
	a.checked.Add(1)
	// The order of the reads matters; see Auditor.
	issued, err := s.coupons.Issued(ctx, t.ID)
	if err != nil {
		return err
	}
	remaining, ok, err := s.stock.Remaining(ctx, t.ID, t.SubStockCount)
	if err != nil {
		return Unavailable("read stock", err)
	}
	if !ok {
		// Counters missing: the next claim rebuilds them.
		delete(a.drift, t.ID)
		return nil
	}
	cur, err := s.catalog.GetTemplate(ctx, t.ID)
	if err != nil {
		return err
	}
	if cur.SubStockCount != t.SubStockCount {
		delete(a.drift, t.ID) // re-split under way; look again next round
		return nil
	}
	r := stockReading{total: cur.TotalStock, issued: issued, remaining: remaining, subKeys: cur.SubStockCount}
	want := max(r.total-r.issued, 0)
	switch {
	case remaining > want:
		delete(a.drift, t.ID)
		return a.takeOff(ctx, cur, r, rebuilds)
	case remaining < want:
		return a.underCredit(ctx, cur, r, rebuilds)
	}
	delete(a.drift, t.ID)
	return nil
}

// takeOff removes the counters' excess over total − issued.
func (a *Auditor) takeOff(ctx context.Context, t *Template, r stockReading, rebuilds *int) error {
	s := a.svc
	excess := r.remaining - max(r.total-r.issued, 0)
	if excess > maxTakeOff {
		*rebuilds++
		// Reset takes everything off at once; the rebuild then sets the
		// right count (and if it fails, the next claim rebuilds).
		if err := s.restock(ctx, t); err != nil {
			return fmt.Errorf("rebuild over-credited stock: %w", err)
		}
		a.repaired(ctx, &a.over, "stock audit: over-credit repaired by a rebuild", t, r)
		return nil
	}
	var taken int64
	for i := range excess {
		_, err := s.stock.Take(ctx, t.ID, t.SubStockCount, uint64(i))
		if errors.Is(err, ErrSoldOut) || errors.Is(err, ErrStockMissing) {
			break // claims or a rebuild got there first: nothing left to take
		}
		if err != nil {
			if taken > 0 {
				a.repaired(ctx, &a.over, "stock audit: over-credit partly taken off", t, r, "taken", taken)
			}
			return Unavailable("take excess stock", err)
		}
		taken++
	}
	a.repaired(ctx, &a.over, "stock audit: over-credit taken off", t, r, "taken", taken)
	return nil
}

// underCredit rebuilds counters that have lagged the records unchanged
// for a settle window.
func (a *Auditor) underCredit(ctx context.Context, t *Template, r stockReading, rebuilds *int) error {
	s := a.svc
	now := s.now()
	d, ok := a.drift[t.ID]
	if !ok || d.stockReading != r {
		a.drift[t.ID] = driftSeen{stockReading: r, since: now}
		return nil
	}
	if now.Sub(d.since) < s.cfg.StockSettle || *rebuilds >= maxRebuilds {
		return nil
	}
	*rebuilds++
	delete(a.drift, t.ID)
	if err := s.restock(ctx, t); err != nil {
		return fmt.Errorf("rebuild under-credited stock: %w", err)
	}
	a.repaired(ctx, &a.under, "stock audit: under-credit repaired by a rebuild", t, r)
	return nil
}

func (a *Auditor) repaired(ctx context.Context, counter *atomic.Int64, msg string, t *Template, r stockReading, attrs ...any) {
	counter.Add(1)
	after, _, err := a.svc.stock.Remaining(ctx, t.ID, t.SubStockCount)
	if err != nil {
		after = -1
	}
	a.svc.log.WarnContext(ctx, msg, append([]any{"template_id", t.ID, "total", r.total, "issued", r.issued,
		"before", r.remaining, "after", after}, attrs...)...)
}

// restock drops a template's counters, so that nothing more can be taken
// from them, and rebuilds them the way a claim does after Redis lost them.
func (s *Service) restock(ctx context.Context, t *Template) error {
	if err := s.stock.Reset(ctx, t.ID, t.SubStockCount); err != nil {
		return Unavailable("reset stock", err)
	}
	return s.rebuildStock(ctx, t.ID)
}
