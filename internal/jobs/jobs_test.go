package jobs_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/jobs"
	"github.com/opencoupon/coupon/internal/testenv"
)

// locker is an in-memory jobs.Locker; its leases never lapse.
type locker struct {
	mu   sync.Mutex
	held map[string]int // name → holder's token
	ttls []time.Duration
	next int
	err  error
}

func newLocker() *locker { return &locker{held: map[string]int{}} }

func (l *locker) Lock(_ context.Context, name string, ttl time.Duration) (func(), bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, false, l.err
	}
	l.ttls = append(l.ttls, ttl)
	if _, ok := l.held[name]; ok {
		return nil, false, nil
	}
	l.next++
	tok := l.next
	l.held[name] = tok
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.held[name] == tok {
			delete(l.held, name)
		}
	}, true, nil
}

func (l *locker) isHeld(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.held[name]
	return ok
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, what, cond)
}

// replica is a Job counting its rounds and whether any ran alongside a
// round of another replica sharing active.
type replica struct {
	job    *jobs.Job
	rounds atomic.Int64
}

func newReplica(l jobs.Locker, active, overlaps *atomic.Int32, release bool) *replica {
	r := &replica{}
	r.job = &jobs.Job{
		Name: "test", Schedule: jobs.Every(time.Millisecond), Locker: l, Lease: "job:test", TTL: time.Minute,
		ReleaseAfterRound: release,
		Round: func(context.Context) error {
			if active.Add(1) > 1 {
				overlaps.Add(1)
			}
			for range 10 {
				runtime.Gosched() // give a rival round the chance to start
			}
			active.Add(-1)
			r.rounds.Add(1)
			return nil
		},
	}
	return r
}

// start runs r until the returned stop is called; stop waits for Run to end.
func start(r *replica) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.job.Run(ctx) }()
	return func() { cancel(); <-done }
}

func TestOneReplicaAtATime(t *testing.T) {
	for _, release := range []bool{false, true} {
		name := map[bool]string{false: "lease kept between rounds", true: "lease given up after each round"}[release]
		t.Run(name, func(t *testing.T) {
			l := newLocker()
			var active, overlaps atomic.Int32
			a, b := newReplica(l, &active, &overlaps, release), newReplica(l, &active, &overlaps, release)
			stopA, stopB := start(a), start(b)
			eventually(t, "100 rounds ran", func() bool { return a.rounds.Load()+b.rounds.Load() >= 100 })
			stopA()
			stopB()
			if n := overlaps.Load(); n != 0 {
				t.Errorf("%d rounds ran alongside another; want none", n)
			}
			if l.isHeld("job:test") {
				t.Error("lease still held after both replicas stopped")
			}
		})
	}
}

func TestHolderKeepsLeaseAndStopHandsItOver(t *testing.T) {
	l := newLocker()
	var active, overlaps atomic.Int32
	a, b := newReplica(l, &active, &overlaps, false), newReplica(l, &active, &overlaps, false)
	ctx := context.Background()
	for i, want := range []bool{true, false, true, false} {
		r := map[bool]*replica{true: a, false: b}[i%2 == 0]
		if ran, err := r.job.RunOnce(ctx); ran != want || err != nil {
			t.Fatalf("round %d: RunOnce = %v, %v; want %v (the first holds the lease)", i, ran, err, want)
		}
	}
	stopA := start(a)
	eventually(t, "a runs under Run", func() bool { return a.rounds.Load() >= 4 })
	stopA()
	if l.isHeld("job:test") {
		t.Fatal("lease still held after Run returned")
	}
	if ran, err := b.job.RunOnce(ctx); !ran || err != nil {
		t.Fatalf("after the holder stopped, RunOnce = %v, %v; want the other replica to take over", ran, err)
	}
}

func TestRoundBoundedByLease(t *testing.T) {
	tests := []struct {
		name         string
		ttl          time.Duration
		wantDeadline bool
	}{
		{"ttl", 100 * time.Second, true},
		{"no ttl", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLocker()
			var deadline time.Time
			var hasDeadline bool
			j := &jobs.Job{Name: "bounded", Schedule: jobs.Every(time.Hour), Locker: l, Lease: "job:bounded", TTL: tt.ttl,
				Round: func(ctx context.Context) error {
					deadline, hasDeadline = ctx.Deadline()
					return nil
				}}
			before := time.Now()
			if ran, err := j.RunOnce(context.Background()); !ran || err != nil {
				t.Fatalf("RunOnce = %v, %v", ran, err)
			}
			after := time.Now()
			if hasDeadline != tt.wantDeadline {
				t.Fatalf("round has a deadline: %v; want %v", hasDeadline, tt.wantDeadline)
			}
			if bound := tt.ttl * 9 / 10; hasDeadline && (deadline.Before(before.Add(bound)) || deadline.After(after.Add(bound))) {
				t.Errorf("round deadline %v after the start; want %v (ttl*9/10)", deadline.Sub(before), bound)
			}
			if len(l.ttls) != 1 || l.ttls[0] != tt.ttl {
				t.Errorf("leases taken for %v; want [%v]", l.ttls, tt.ttl)
			}
		})
	}
}

func TestRunOnceErrors(t *testing.T) {
	l := newLocker()
	boom := errors.New("boom")
	var fail atomic.Bool
	now := time.Now()
	j := &jobs.Job{Name: "e", Schedule: jobs.Every(time.Hour), Locker: l, Lease: "job:e", TTL: time.Minute,
		Now: func() time.Time { return now },
		Round: func(context.Context) error {
			if fail.Load() {
				return boom
			}
			return nil
		}}
	if !j.LastRound().IsZero() {
		t.Fatal("LastRound set before any round")
	}
	if ran, err := j.RunOnce(context.Background()); !ran || err != nil {
		t.Fatalf("RunOnce = %v, %v", ran, err)
	}
	last := j.LastRound()
	if last.IsZero() {
		t.Fatal("LastRound not set by a good round")
	}
	fail.Store(true)
	if ran, err := j.RunOnce(context.Background()); !ran || !errors.Is(err, boom) {
		t.Fatalf("RunOnce = %v, %v; want the round's error", ran, err)
	}
	if got := j.LastRound(); !got.Equal(last) {
		t.Errorf("LastRound = %v after a failed round; want %v", got, last)
	}
	l.mu.Lock()
	l.err = errors.New("locker down")
	l.mu.Unlock()
	// The lease taken moments ago still stands: the round runs on it.
	fail.Store(false)
	if ran, err := j.RunOnce(context.Background()); !ran || err != nil {
		t.Errorf("RunOnce = %v, %v with the locker down and the lease fresh; want the round", ran, err)
	}
	// A third of the TTL on, the lease must be taken again, and cannot be.
	now = now.Add(time.Minute / 3)
	if ran, err := j.RunOnce(context.Background()); ran || err == nil {
		t.Errorf("RunOnce = %v, %v with the locker down; want an error and no round", ran, err)
	}
}

// TestLeaseRenewedEveryThirdOfTTL: rounds more frequent than a third of
// the TTL run on the lease as taken; it is taken again once a third of the
// TTL has passed, and each round ends by nine tenths of the TTL after the
// lease was taken.
func TestLeaseRenewedEveryThirdOfTTL(t *testing.T) {
	l := newLocker()
	now := time.Now()
	var left []time.Duration // from each round's start to its deadline
	j := &jobs.Job{Name: "often", Schedule: jobs.Every(time.Hour), Locker: l, Lease: "job:often", TTL: 30 * time.Second,
		Now: func() time.Time { return now },
		Round: func(ctx context.Context) error {
			d, _ := ctx.Deadline()
			left = append(left, time.Until(d))
			return nil
		}}
	for range 25 { // a round a second for 25 s
		if ran, err := j.RunOnce(context.Background()); !ran || err != nil {
			t.Fatalf("RunOnce = %v, %v", ran, err)
		}
		now = now.Add(time.Second)
	}
	if len(l.ttls) != 3 { // at 0 s, 10 s and 20 s
		t.Errorf("lease taken %d times in 25 rounds a second apart with a 30 s TTL; want 3", len(l.ttls))
	}
	for i, d := range left {
		// Taken at 0, 10 and 20 s; round i starts at i s.
		want := time.Duration(i/10)*10*time.Second + 27*time.Second - time.Duration(i)*time.Second
		if d > want || d < want-time.Second {
			t.Errorf("round %d: %v left to its deadline; want %v", i, d, want)
		}
	}
}

func TestRunStartsAtOnceAndDisabled(t *testing.T) {
	var rounds atomic.Int64
	round := func(context.Context) error { rounds.Add(1); return nil }
	// Off: Run returns at once without a round.
	for _, s := range []jobs.Schedule{nil, jobs.Every(0), jobs.Every(-1)} {
		(&jobs.Job{Name: "off", Schedule: s, Locker: newLocker(), Lease: "off", Round: round}).Run(context.Background())
	}
	if n := rounds.Load(); n != 0 {
		t.Fatalf("%d rounds of a disabled job", n)
	}
	// An hourly job runs its first round at once (catching up after a start).
	r := &replica{job: &jobs.Job{Name: "hourly", Schedule: jobs.Every(time.Hour), Locker: newLocker(), Lease: "h", Round: round}}
	stop := start(r)
	eventually(t, "the first round ran", func() bool { return rounds.Load() == 1 })
	stop()
}

func TestRunOnCron(t *testing.T) {
	c, err := jobs.ParseCron("* * * * * *", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	var rounds atomic.Int64
	r := &replica{job: &jobs.Job{Name: "cron", Schedule: c, Locker: newLocker(), Lease: "c", ReleaseAfterRound: true,
		Round: func(context.Context) error { rounds.Add(1); return nil }}}
	stop := start(r)
	eventually(t, "three rounds on a cron of every second", func() bool { return rounds.Load() >= 3 })
	stop()
}
