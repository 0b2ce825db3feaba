package participant

import (
	"context"
	"time"

	"github.com/opencoupon/coupon/internal/jobs"
)

// job returns a job of svc that runs round every interval (zero or less:
// never) on one replica at a time, under the lease named lease in Leases;
// longest bounds one round.
func (s *Service) job(name, lease string, every, longest time.Duration, round func(ctx context.Context) error) *jobs.Job {
	return &jobs.Job{
		Name: name, Schedule: jobs.Every(every), Locker: s.leases, Lease: lease,
		TTL: jobs.LeaseTTL(every, longest), Round: round, Log: s.log,
	}
}
