package participant

import (
	"sync"
	"time"
)

// soldOutMemo remembers, per template, that its stock was found empty, so
// that a storm of claims on a sold-out template is refused from memory
// instead of each asking Redis (and, before, MySQL). An entry lasts
// Config.SoldOutRecheck; a top-up on this replica drops it at once, and
// one on another replica is seen at the next re-check.
type soldOutMemo struct {
	mu    sync.RWMutex
	until map[int64]time.Time
}

func (m *soldOutMemo) known(templateID int64, now time.Time) bool {
	m.mu.RLock()
	u, ok := m.until[templateID]
	m.mu.RUnlock()
	return ok && now.Before(u)
}

func (m *soldOutMemo) mark(templateID int64, until time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.until == nil {
		m.until = map[int64]time.Time{}
	}
	m.until[templateID] = until
	if len(m.until) > 4096 { // forget lapsed entries now and then
		for id, u := range m.until {
			if u.Before(until) && id != templateID {
				delete(m.until, id)
			}
		}
	}
}

func (m *soldOutMemo) forget(templateID int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.until, templateID)
}
