package redis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
	couponredis "github.com/opencoupon/coupon/participant/redis"
)

// adapter returns adapters over the shared Redis under a prefix of the
// test's own, closed when the test ends.
func adapter(t *testing.T) (*couponredis.Adapter, goredis.UniversalClient, string) {
	t.Helper()
	prefix := testenv.Unique(t) + ":"
	rdb := mustRedis(t, prefix)
	r := couponredis.New(rdb, prefix)
	t.Cleanup(r.Close)
	return r, rdb, prefix
}

// mustRedis is testenv.MustRedis, skipped under -short.
func mustRedis(t *testing.T, prefix string) *goredis.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis")
	}
	return testenv.MustRedis(t, prefix)
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// TestChangesApplyOnce: a Give or an Add sent twice — as a client re-send
// after a lost reply would — changes the counters once, and an Add stamped
// with an older generation does not land on rebuilt counters.
func TestChangesApplyOnce(t *testing.T) {
	r, _, _ := adapter(t)
	ctx := ctxT(t)
	const tpl, k = 7, 3
	if err := r.Stock.Set(ctx, tpl, k, 10); err != nil {
		t.Fatal(err)
	}
	remaining := func() int64 {
		t.Helper()
		n, ok, err := r.Stock.Remaining(ctx, tpl, k)
		if err != nil || !ok {
			t.Fatalf("Remaining = %v, %v", ok, err)
		}
		return n
	}
	tk, err := r.Stock.Take(ctx, tpl, k, 1)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.Stock.Give(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if got := remaining(); got != 10 {
		t.Fatalf("after one take and a twice-sent give: %d, want 10", got)
	}
	gen, ok, err := r.Stock.Generation(ctx, tpl)
	if err != nil || !ok {
		t.Fatalf("Generation = %v, %v", ok, err)
	}
	for range 2 {
		if ok, err := r.Stock.Add(ctx, tpl, k, 5, gen, "op-1"); err != nil || !ok {
			t.Fatalf("Add = %v, %v", ok, err)
		}
	}
	if got := remaining(); got != 15 {
		t.Fatalf("after a twice-sent add of 5: %d, want 15", got)
	}
	if err := r.Stock.Set(ctx, tpl, k, 15); err != nil { // a rebuild
		t.Fatal(err)
	}
	if ok, err := r.Stock.Add(ctx, tpl, k, 5, gen, "op-2"); err != nil || ok {
		t.Fatalf("Add with the old generation = %v, %v; want refused", ok, err)
	}
	if got := remaining(); got != 15 {
		t.Fatalf("after a stale add: %d, want 15", got)
	}
}

// TestLeaseAndRequestMarkers: a lease is exclusive until released; a
// request marker answers later calls with its fingerprint and is forgotten
// only by the call that holds it.
func TestLeaseAndRequestMarkers(t *testing.T) {
	r, _, _ := adapter(t)
	ctx := ctxT(t)
	unlock, ok, err := r.Leases.Lock(ctx, "job", time.Minute)
	if err != nil || !ok {
		t.Fatalf("Lock = %v, %v", ok, err)
	}
	if _, ok, err := r.Leases.Lock(ctx, "job", time.Minute); err != nil || ok {
		t.Fatalf("second Lock = %v, %v; want refused", ok, err)
	}
	unlock()
	if _, ok, err := r.Leases.Lock(ctx, "job", time.Minute); err != nil || !ok {
		t.Fatalf("Lock after unlock = %v, %v", ok, err)
	}

	tok, started, _, since, err := r.Requests.Begin(ctx, "req-1", "u1:t1", time.Minute)
	if err != nil || !started || time.Since(since) > time.Minute {
		t.Fatalf("Begin = %v, %v, since %v", started, err, since)
	}
	_, started, held, _, err := r.Requests.Begin(ctx, "req-1", "u2:t1", time.Minute)
	if err != nil || started || held.FP != "u1:t1" || held.Token != tok {
		t.Fatalf("Begin by another = %v, %+v, %v; want held by u1:t1", started, held, err)
	}
	if m, _, err := r.Requests.Peek(ctx, "req-1"); err != nil || m == nil || m.FP != "u1:t1" {
		t.Fatalf("Peek = %+v, %v", m, err)
	}
	if err := r.Requests.Forget(ctx, "req-1", "u1:t1", "not-mine"); err != nil {
		t.Fatal(err)
	}
	if m, _, _ := r.Requests.Peek(ctx, "req-1"); m == nil {
		t.Fatal("a Forget with another call's token dropped the marker")
	}
	// A dead call's marker is taken over once; a stale view of it is not.
	tok2, ok, err := r.Requests.TakeOver(ctx, "req-1", held, "u1:t1", time.Minute)
	if err != nil || !ok || tok2 == tok {
		t.Fatalf("TakeOver = %q, %v, %v", tok2, ok, err)
	}
	if _, ok, err := r.Requests.TakeOver(ctx, "req-1", held, "u1:t1", time.Minute); err != nil || ok {
		t.Fatalf("second TakeOver of the same marker = %v, %v; want refused", ok, err)
	}
	if err := r.Requests.Forget(ctx, "req-1", "u1:t1", tok2); err != nil {
		t.Fatal(err)
	}
	if m, _, _ := r.Requests.Peek(ctx, "req-1"); m != nil {
		t.Fatalf("marker after its holder forgot it = %+v", m)
	}
}

// TestMaybeIssuedMarker: a call that ends maybe issued keeps its marker,
// for the rest of its TTL, marked so; only its own token can mark it,
// repeating changes nothing, and a retry can take it over (once).
func TestMaybeIssuedMarker(t *testing.T) {
	r, rdb, prefix := adapter(t)
	ctx := ctxT(t)
	tok, started, _, _, err := r.Requests.Begin(ctx, "req-m", "u1:t1", time.Minute)
	if err != nil || !started {
		t.Fatalf("Begin = %v, %v", started, err)
	}
	if err := r.Requests.MaybeIssued(ctx, "req-m", "u1:t1", "not-mine"); err != nil {
		t.Fatal(err)
	}
	if m, _, err := r.Requests.Peek(ctx, "req-m"); err != nil || m == nil || m.MaybeIssued {
		t.Fatalf("Peek after another call's MaybeIssued = %+v, %v; want unmarked", m, err)
	}
	for range 2 {
		if err := r.Requests.MaybeIssued(ctx, "req-m", "u1:t1", tok); err != nil {
			t.Fatal(err)
		}
	}
	held, _, err := r.Requests.Peek(ctx, "req-m")
	if err != nil || held == nil || !held.MaybeIssued || held.Token != tok || held.FP != "u1:t1" {
		t.Fatalf("Peek after MaybeIssued = %+v, %v; want u1:t1's marker, maybe issued", held, err)
	}
	keys, err := rdb.Keys(ctx, prefix+"req:*:req-m").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("marker keys = %v, %v", keys, err)
	}
	if ttl, err := rdb.PTTL(ctx, keys[0]).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("marker TTL after MaybeIssued = %v, %v; want the rest of a minute", ttl, err)
	}
	tok2, ok, err := r.Requests.TakeOver(ctx, "req-m", *held, "u1:t1", time.Minute)
	if err != nil || !ok || tok2 == tok {
		t.Fatalf("TakeOver of a maybe-issued marker = %q, %v, %v", tok2, ok, err)
	}
	if _, ok, err := r.Requests.TakeOver(ctx, "req-m", *held, "u1:t1", time.Minute); err != nil || ok {
		t.Fatalf("second TakeOver of the same marker = %v, %v; want refused", ok, err)
	}
	if m, _, _ := r.Requests.Peek(ctx, "req-m"); m == nil || m.MaybeIssued || m.Token != tok2 {
		t.Fatalf("marker after the takeover = %+v; want the taker's, in flight", m)
	}
}

// TestBreakerFailsFastWhileRedisHangs: while Redis does not answer, calls
// fail with Unavailable; after a few failures they stop waiting out the
// read timeout; once Redis answers again calls succeed.
func TestBreakerFailsFastWhileRedisHangs(t *testing.T) {
	prefix := testenv.Unique(t) + ":"
	mustRedis(t, prefix)
	proxy := testenv.StartProxy(t, testenv.RedisAddr())
	rdb := goredis.NewClient(&goredis.Options{Addr: proxy.Addr, MaxRetries: -1, ReadTimeout: 200 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	rdb.AddHook(couponredis.Breaker())
	r := couponredis.New(rdb, prefix)
	t.Cleanup(r.Close)
	if err := r.Stock.Set(ctxT(t), 1, 1, 10); err != nil {
		t.Fatal(err)
	}
	proxy.Stall()
	sawFastFail := false
	for range 20 {
		_, err := r.Stock.Take(ctxT(t), 1, 1, 0)
		if participant.ErrorCode(err) != participant.EUNAVAILABLE {
			t.Fatalf("Take while Redis hangs = %v, want Unavailable", err)
		}
		sawFastFail = sawFastFail || errors.Is(err, couponredis.ErrRedisDown)
	}
	if !sawFastFail {
		t.Fatal("the breaker never opened")
	}
	proxy.Resume()
	testenv.Eventually(t, 10*time.Second, "calls to succeed again", func() bool {
		_, err := r.Stock.Take(ctxT(t), 1, 1, 0)
		return err == nil
	})
}

// TestCallsRacingClose: calls that race Close — a background give-back
// outliving shutdown did, and the send on the closed queue panicked — are
// either answered or fail without being sent, so the counters account for
// exactly the calls that answered OK.
func TestCallsRacingClose(t *testing.T) {
	prefix := testenv.Unique(t) + ":"
	rdb := mustRedis(t, prefix)
	r := couponredis.New(rdb, prefix)
	ctx := ctxT(t)
	const tpl, k, total = 9, 4, 1_000_000
	if err := r.Stock.Set(ctx, tpl, k, total); err != nil {
		t.Fatal(err)
	}
	type tally struct{ taken, given int64 }
	results := make(chan tally)
	started := make(chan struct{}, 16)
	for range 16 {
		go func() {
			var n tally
			defer func() { results <- n }()
			for i := 0; ; i++ {
				tk, err := r.Stock.Take(ctx, tpl, k, uint64(i))
				if err != nil {
					return
				}
				n.taken++
				if i == 10 {
					started <- struct{}{}
				}
				if err := r.Stock.Give(ctx, tk); err != nil {
					return
				}
				n.given++
			}
		}()
	}
	for range 16 {
		<-started
	}
	r.Close()
	var sum tally
	for range 16 {
		n := <-results
		sum.taken += n.taken
		sum.given += n.given
	}
	if _, err := r.Stock.Take(ctx, tpl, k, 1); err == nil {
		t.Fatal("Take after Close answered OK")
	}
	probe := couponredis.New(rdb, prefix)
	t.Cleanup(probe.Close)
	got, ok, err := probe.Stock.Remaining(ctx, tpl, k)
	if err != nil || !ok {
		t.Fatalf("Remaining = %v, %v", ok, err)
	}
	if want := total - sum.taken + sum.given; got != want {
		t.Fatalf("remaining %d after %d takes and %d gives answered OK, want %d", got, sum.taken, sum.given, want)
	}
}

// TestTouchBearsEveryBucketOnce: Touch gives every request bucket a birth
// time, never moves one that has it, and gives a new one after a loss.
func TestTouchBearsEveryBucketOnce(t *testing.T) {
	r, rdb, prefix := adapter(t)
	ctx := ctxT(t)
	since := func() time.Time {
		t.Helper()
		m, s, err := r.Requests.Peek(ctx, "some-request")
		if err != nil || m != nil {
			t.Fatalf("Peek = %v, %v", m, err)
		}
		return s
	}
	before := time.Now().Add(-time.Millisecond)
	if err := r.Requests.Touch(ctx); err != nil {
		t.Fatal(err)
	}
	born := since()
	if born.Before(before) || born.After(time.Now()) {
		t.Fatalf("born %v, want the time of Touch (after %v)", born, before)
	}
	keys, err := rdb.Keys(ctx, prefix+"req:*:born").Result()
	if err != nil || len(keys) != 64 {
		t.Fatalf("%d born keys (%v), want 64", len(keys), err)
	}
	if err := r.Requests.Touch(ctx); err != nil {
		t.Fatal(err)
	}
	if again := since(); !again.Equal(born) {
		t.Fatalf("a second Touch moved the birth from %v to %v", born, again)
	}
	testenv.DeleteKeys(t, rdb, prefix+"req:") // Redis lost its data
	lost := time.Now().Add(-time.Millisecond)
	if err := r.Requests.Touch(ctx); err != nil {
		t.Fatal(err)
	}
	if reborn := since(); reborn.Before(lost) {
		t.Fatalf("born %v after the loss at %v, want a birth after it", reborn, lost)
	}
}
