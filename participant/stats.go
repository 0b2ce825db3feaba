package participant

import "sync/atomic"

// Stats counts what the service has done since it started, for metrics.
type Stats struct {
	// Locks, Consumes and Releases count the TCC changes made (a barrier
	// skip or a branch that found nothing to do is not counted).
	Locks, Consumes, Releases int64
	// ConfirmWithoutLock counts Confirms that found no lock of their own
	// global transaction: the order may be paid without its coupon. Alert on
	// any.
	ConfirmWithoutLock int64
	// CacheHits and CacheMisses count template reads served from memory and
	// loaded (from Redis or MySQL).
	CacheHits, CacheMisses int64
}

type counters struct {
	locks, consumes, releases, confirmWithoutLock atomic.Int64
}

// Stats returns the counters so far.
func (s *Service) Stats() Stats {
	hits, misses := s.templates.Counts()
	return Stats{
		Locks: s.counts.locks.Load(), Consumes: s.counts.consumes.Load(), Releases: s.counts.releases.Load(),
		ConfirmWithoutLock: s.counts.confirmWithoutLock.Load(),
		CacheHits:          hits, CacheMisses: misses,
	}
}
