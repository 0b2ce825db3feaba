// Package jobs runs background jobs on one replica at a time: a Job runs
// rounds on a schedule (every interval, or a cron expression in a zone)
// while it holds a lease in a Locker, so that of all the replicas running
// the same Job one does each round.
package jobs

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Locker hands out named leases shared by replicas.
type Locker interface {
	// Lock takes the lease name for ttl; ok is false when another holder
	// has it. unlock gives it up. A Locker whose leases live with their
	// holder (a MySQL named lock) may ignore ttl.
	Lock(ctx context.Context, name string, ttl time.Duration) (unlock func(), ok bool, err error)
}

// LeaseTTL outlives a few missed rounds and the longest round expected.
func LeaseTTL(every, longestRound time.Duration) time.Duration {
	return max(3*every, longestRound)
}

// Job runs Round on Schedule on one replica at a time. Set its fields,
// then call Run (or RunOnce); a Job must not be copied after first use.
type Job struct {
	// Name names the job in logs.
	Name string
	// Schedule says when rounds run; Run runs one at once, then on each
	// tick. nil or Every of zero or less: Run does nothing.
	Schedule Schedule
	// Locker holds the lease Lease for TTL.
	Locker Locker
	Lease  string
	// TTL is how long the lease lasts unless renewed. A round is cut at
	// TTL*9/10 after the lease was taken, so that it ends before the
	// lease can lapse and no other replica runs one alongside it. Zero:
	// the lease does not lapse (it lives with its holder) and rounds are
	// not cut.
	TTL time.Duration
	// ReleaseAfterRound gives the lease up when a round ends, for leases
	// that should not be held while idle (a MySQL named lock ties up a
	// connection). Otherwise the holder keeps the lease between rounds
	// and, holding it, runs the next one too.
	ReleaseAfterRound bool
	// Round is one round of the job.
	Round func(ctx context.Context) error
	// Log gets the rounds' errors; nil: discarded.
	Log *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time

	mu      sync.Mutex // one round at a time; guards release and taken
	release func()     // nil while the lease is not held
	taken   time.Time  // when the lease held was last taken
	last    atomic.Int64
}

// Run runs a round at once, then on each tick of the schedule, until ctx is
// done; then it gives up the lease so that another replica takes over at
// once. Ticks that come while a round runs are dropped.
func (j *Job) Run(ctx context.Context) {
	if !enabled(j.Schedule) {
		return
	}
	defer j.stop()
	var wait func() <-chan time.Time
	switch s := j.Schedule.(type) {
	case Every:
		t := time.NewTicker(time.Duration(s))
		defer t.Stop()
		wait = func() <-chan time.Time { return t.C }
	default:
		t := time.NewTimer(0)
		defer t.Stop()
		var prev time.Time
		wait = func() <-chan time.Time {
			next := nextAfter(s, prev, j.now())
			if next.IsZero() {
				return nil // no tick ever again: wait for ctx
			}
			prev = next
			t.Reset(next.Sub(j.now()))
			return t.C
		}
	}
	for {
		if _, err := j.RunOnce(ctx); err != nil && ctx.Err() == nil {
			j.log().WarnContext(ctx, j.Name+" round", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-wait():
		}
	}
}

// RunOnce runs one round if this Job holds, or can take, the lease; ran is
// false when another replica holds it.
func (j *Job) RunOnce(ctx context.Context) (ran bool, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	ok, err := j.take(ctx)
	if err != nil || !ok {
		return false, err
	}
	if j.ReleaseAfterRound {
		defer j.drop()
	}
	rctx := ctx
	if j.TTL > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, j.taken.Add(j.TTL*9/10).Sub(j.now()))
		defer cancel()
	}
	err = j.Round(rctx)
	if err == nil {
		j.last.Store(j.now().UnixNano())
	}
	return true, err
}

// LastRound is when the last round run here ended without error (zero:
// none yet); its age is the job's lag.
func (j *Job) LastRound() time.Time {
	if n := j.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// take re-takes the lease at the start of a round (gives it up and takes
// it again at once), so that the holder keeps it while it runs and another
// replica takes over within the TTL when the holder dies. A lapsing lease
// taken less than a third of its TTL ago is kept as it is (a job with
// rounds every 50 ms would otherwise spend two Redis calls a round on it);
// RunOnce cuts each round at nine tenths of the TTL after the lease was
// taken, so no round outlives it.
func (j *Job) take(ctx context.Context) (bool, error) {
	if j.release != nil && j.TTL > 0 && !j.ReleaseAfterRound && j.now().Sub(j.taken) < j.TTL/3 {
		return true, nil
	}
	j.drop()
	taken := j.now()
	unlock, ok, err := j.Locker.Lock(ctx, j.Lease, j.TTL)
	if err != nil {
		return false, err
	}
	if ok {
		j.release, j.taken = unlock, taken
	}
	return ok, nil
}

func (j *Job) drop() {
	if j.release != nil {
		j.release()
		j.release = nil
	}
}

// stop gives up the lease, waiting for a round under way to end.
func (j *Job) stop() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.drop()
}

func (j *Job) now() time.Time {
	if j.Now != nil {
		return j.Now()
	}
	return time.Now()
}

func (j *Job) log() *slog.Logger {
	if j.Log != nil {
		return j.Log
	}
	return slog.New(slog.DiscardHandler)
}
