package participant

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencoupon/coupon/internal/jobs"
)

// SweepStats counts what a Sweeper has done since it was made.
type SweepStats struct {
	Rounds  int64 // rounds run while holding the lease
	Expired int64 // coupons moved to EXPIRED
	Ended   int64 // templates moved to ENDED
	// LastRound is when the last round run on this replica ended without
	// error (zero: none yet); its age is the sweeper's lag.
	LastRound time.Time
}

// Sweeper writes expiry to the records: AVAILABLE coupons past expire_at
// become EXPIRED and templates past valid_until become ENDED. Reads never
// wait for it (Coupon.EffectiveStatus already reports expiry); it keeps the
// stored statuses, the indexes and the reports honest. One replica sweeps
// at a time, under a lease (Leases).
type Sweeper struct {
	svc   *Service
	store Expirer
	job   *jobs.Job

	rounds, expired, ended atomic.Int64
}

// NewSweeper returns the expiry sweeper of svc. It runs every
// Config.SweepInterval once Run is called.
func NewSweeper(svc *Service, store Expirer) *Sweeper {
	w := &Sweeper{svc: svc, store: store}
	w.job = svc.job("expiry sweep", "job:sweep", svc.cfg.SweepInterval, 30*time.Second, w.round)
	return w
}

// Run sweeps every interval until ctx is done, then gives up the lease.
func (w *Sweeper) Run(ctx context.Context) { w.job.Run(ctx) }

// RunOnce runs one sweep if this Sweeper holds, or can take, the lease;
// ran is false when another replica holds it.
func (w *Sweeper) RunOnce(ctx context.Context) (ran bool, err error) { return w.job.RunOnce(ctx) }

// Stats returns the counters so far.
func (w *Sweeper) Stats() SweepStats {
	return SweepStats{Rounds: w.rounds.Load(), Expired: w.expired.Load(), Ended: w.ended.Load(), LastRound: w.job.LastRound()}
}

func (w *Sweeper) round(ctx context.Context) error {
	w.rounds.Add(1)
	now := w.svc.now().UTC()
	var errs []error
	ids, err := w.store.EndTemplates(ctx, now)
	if len(ids) > 0 {
		w.ended.Add(int64(len(ids)))
		w.svc.templates.invalidate(ctx, ids...)
		w.svc.log.InfoContext(ctx, "templates past their window ended", "template_ids", ids)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("end templates: %w", err))
	}
	// Shard databases are swept side by side, the tables of one in turn.
	shards := w.store.ShardTables()
	shardErrs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, tables := range shards {
		wg.Go(func() { shardErrs[i] = w.sweepShard(ctx, tables, now) })
	}
	wg.Wait()
	return errors.Join(append(errs, shardErrs...)...)
}

func (w *Sweeper) sweepShard(ctx context.Context, tables []int, now time.Time) error {
	var errs []error
	limit := w.svc.cfg.SweepBatch
	for _, t := range tables {
		for {
			n, err := w.store.ExpireBatch(ctx, t, now, limit)
			w.expired.Add(int64(n))
			if err != nil {
				// The next round resumes where this one stopped.
				errs = append(errs, fmt.Errorf("expire coupons in table %d: %w", t, err))
				break
			}
			if n < limit {
				break
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}
