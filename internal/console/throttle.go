package console

import (
	"sync"
	"time"
)

// Defaults of the sign-in throttle.
const (
	DefaultSigninFailures = 5
	DefaultSigninWindow   = 15 * time.Minute
)

// maxThrottled bounds the client addresses the throttle remembers.
const maxThrottled = 100_000

// throttle counts failed sign-ins per client address. After max failures
// within window the address is refused — the right token too — until the
// oldest of them is window old. Refused attempts are not failures: an
// operator waiting out the window is not locked out for longer by a script
// still trying from the same address.
type throttle struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu sync.Mutex
	m  map[string][]time.Time // failure times within window, oldest first
}

func newThrottle(max int, window time.Duration, now func() time.Time) *throttle {
	return &throttle{max: max, window: window, now: now, m: map[string][]time.Time{}}
}

// recent drops failures older than the window; t.mu is held.
func (t *throttle) recent(addr string, now time.Time) []time.Time {
	fs := t.m[addr]
	i := 0
	for i < len(fs) && !now.Before(fs[i].Add(t.window)) {
		i++
	}
	fs = fs[i:]
	if len(fs) == 0 {
		delete(t.m, addr)
		return nil
	}
	t.m[addr] = fs
	return fs
}

// wait is how long addr must wait before it may try to sign in; 0 when it
// may now.
func (t *throttle) wait(addr string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	fs := t.recent(addr, now)
	if len(fs) < t.max {
		return 0
	}
	return fs[len(fs)-t.max].Add(t.window).Sub(now)
}

// fail records a failed sign-in of addr and reports whether addr is now
// refused.
func (t *throttle) fail(addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.m) >= maxThrottled {
		for a := range t.m {
			t.recent(a, now)
		}
		for a := range t.m { // still full: forget arbitrary addresses
			if len(t.m) < maxThrottled {
				break
			}
			delete(t.m, a)
		}
	}
	fs := append(t.recent(addr, now), now)
	t.m[addr] = fs
	return len(fs) >= t.max
}

// reset forgets addr's failures after a good sign-in.
func (t *throttle) reset(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, addr)
}
