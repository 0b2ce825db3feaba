package participant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
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
	job   job

	rounds, expired, ended atomic.Int64
}

// lastRound records when a job's rounds last ended well, for lag metrics.
type lastRound struct{ unixNano atomic.Int64 }

func (l *lastRound) set(t time.Time) { l.unixNano.Store(t.UnixNano()) }

func (l *lastRound) get() time.Time {
	if n := l.unixNano.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// NewSweeper returns the expiry sweeper of svc. It runs every
// Config.SweepInterval once Run is called.
func NewSweeper(svc *Service, store Expirer) *Sweeper {
	w := &Sweeper{svc: svc, store: store}
	w.job = job{
		name: "expiry sweep", every: svc.cfg.SweepInterval, log: svc.log,
		lease: lease{leases: svc.leases, name: "job:sweep", ttl: leaseTTL(svc.cfg.SweepInterval, 30*time.Second)},
		round: w.round,
	}
	return w
}

// Run sweeps every interval until ctx is done, then gives up the lease.
func (w *Sweeper) Run(ctx context.Context) { w.job.run(ctx) }

// RunOnce runs one sweep if this Sweeper holds, or can take, the lease;
// ran is false when another replica holds it.
func (w *Sweeper) RunOnce(ctx context.Context) (ran bool, err error) { return w.job.runOnce(ctx) }

// Stats returns the counters so far.
func (w *Sweeper) Stats() SweepStats {
	return SweepStats{Rounds: w.rounds.Load(), Expired: w.expired.Load(), Ended: w.ended.Load(), LastRound: w.job.last.get()}
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

// job runs a round every interval while it holds its lease, so that one
// replica runs it at a time.
type job struct {
	name  string
	every time.Duration // negative: disabled
	log   *slog.Logger
	lease lease
	round func(ctx context.Context) error

	mu   sync.Mutex // one round at a time
	last lastRound
}

func (j *job) run(ctx context.Context) {
	if j.every <= 0 {
		return
	}
	defer j.stop()
	t := time.NewTicker(j.every)
	defer t.Stop()
	for {
		if _, err := j.runOnce(ctx); err != nil && ctx.Err() == nil {
			j.log.WarnContext(ctx, j.name+" round", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (j *job) runOnce(ctx context.Context) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	ok, err := j.lease.take(ctx)
	if err != nil || !ok {
		return false, err
	}
	// The round ends before the lease can lapse, so that no other replica
	// runs one alongside it.
	rctx, cancel := context.WithTimeout(ctx, j.lease.ttl*9/10)
	defer cancel()
	err = j.round(rctx)
	if err == nil {
		j.last.set(time.Now())
	}
	return true, err
}

// stop gives up the lease so that another replica takes over at once.
func (j *job) stop() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lease.drop()
}

// lease is a job's hold on a Leases lock. It is re-taken at the start of
// every round (given up and taken again at once), so the holder keeps it
// while it runs and another replica takes over within the TTL when the
// holder dies.
type lease struct {
	leases  Leases
	name    string
	ttl     time.Duration
	release func() // nil while not held
}

func (l *lease) take(ctx context.Context) (bool, error) {
	l.drop()
	unlock, ok, err := l.leases.Lock(ctx, l.name, l.ttl)
	if err != nil {
		return false, err
	}
	if ok {
		l.release = unlock
	}
	return ok, nil
}

func (l *lease) drop() {
	if l.release != nil {
		l.release()
		l.release = nil
	}
}

// leaseTTL outlives a few missed rounds and the longest round expected.
func leaseTTL(every, longestRound time.Duration) time.Duration {
	return max(3*every, longestRound)
}

// LeasedJob runs a round every interval on one replica at a time, under a
// lease in Leases, like the sweeper and the audit: for jobs the service's
// assembly adds (the barrier janitor).
type LeasedJob struct{ job job }

// NewLeasedJob returns a job named name that runs round every interval
// (negative: never); longest bounds one round.
func NewLeasedJob(svc *Service, name string, every, longest time.Duration, round func(ctx context.Context) error) *LeasedJob {
	return &LeasedJob{job: job{
		name: name, every: every, log: svc.log, round: round,
		lease: lease{leases: svc.leases, name: "job:" + name, ttl: leaseTTL(every, longest)},
	}}
}

// Run runs rounds until ctx is done, then gives up the lease.
func (j *LeasedJob) Run(ctx context.Context) { j.job.run(ctx) }

// RunOnce runs one round if this replica holds, or can take, the lease.
func (j *LeasedJob) RunOnce(ctx context.Context) (bool, error) { return j.job.runOnce(ctx) }

// LastRound is when the last round here ended without error.
func (j *LeasedJob) LastRound() time.Time { return j.job.last.get() }
