package app

import (
	"context"
	"time"

	"github.com/opencoupon/coupon/internal/janitor"
	"github.com/opencoupon/coupon/internal/jobs"
)

// barrierJanitor builds the job that cleans the shards' barrier tables
// on one replica at a time under a Redis lease, or nil when it is off.
func (a *App) barrierJanitor() (*jobs.Job, error) {
	c := a.cfg.Barrier
	if c.Interval <= 0 {
		return nil, nil
	}
	j, err := a.store.Branches.BarrierJanitor(janitor.Config{
		Retention: c.Retention, MaxAge: c.MaxAge, Batch: c.Batch,
		Coordinator: c.Coordinator, UnknownFinished: c.UnknownFinished, Now: a.cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	round := func(ctx context.Context) error {
		st, err := j.RunOnce(ctx)
		a.metrics.ObserveBarrierJanitor(st.DeletedFinished, st.DeletedExpired, st.KeptUnknown, st.KeptPastMaxAge, st.OldestAge)
		if st.Deleted > 0 {
			a.log.InfoContext(ctx, "barrier janitor", "deleted_finished", st.DeletedFinished, "deleted_expired", st.DeletedExpired,
				"kept", st.Kept, "kept_unknown", st.KeptUnknown, "oldest_age", st.OldestAge.String())
		}
		if st.KeptPastMaxAge > 0 {
			a.log.WarnContext(ctx, "barrier janitor kept rows of unfinished transactions past max age",
				"kept_past_max_age", st.KeptPastMaxAge)
		}
		return err
	}
	return &jobs.Job{
		Name: "barrier-janitor", Schedule: jobs.Every(c.Interval), Locker: a.redis.Leases, Lease: "job:barrier-janitor",
		TTL: jobs.LeaseTTL(c.Interval, 10*time.Minute), Round: round, Log: a.log,
	}, nil
}

// BarrierJanitor is the barrier janitor's job, nil when it is off.
func (a *App) BarrierJanitor() *jobs.Job { return a.janitor }
