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

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// TestChangesApplyOnce: a Give or an Add sent twice — as a client re-send
// after a lost reply would — changes the counters once, and an Add stamped
// with an older generation does not land on rebuilt counters.
func TestChangesApplyOnce(t *testing.T) {
	prefix := testenv.Unique(t) + ":"
	rdb := testenv.MustRedis(t, prefix)
	r := couponredis.New(rdb, prefix)
	t.Cleanup(r.Close)
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
	prefix := testenv.Unique(t) + ":"
	rdb := testenv.MustRedis(t, prefix)
	r := couponredis.New(rdb, prefix)
	t.Cleanup(r.Close)
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

	tok, started, _, err := r.Requests.Begin(ctx, "req-1", "u1:t1", time.Minute)
	if err != nil || !started {
		t.Fatalf("Begin = %v, %v", started, err)
	}
	if _, started, held, err := r.Requests.Begin(ctx, "req-1", "u2:t1", time.Minute); err != nil || started || held != "u1:t1" {
		t.Fatalf("Begin by another = %v, %q, %v; want held by u1:t1", started, held, err)
	}
	if err := r.Requests.Finish(ctx, "req-1", "u1:t1", "not-mine", false, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, started, _, _ := r.Requests.Begin(ctx, "req-1", "u1:t1", time.Minute); started {
		t.Fatal("a Finish with another call's token forgot the marker")
	}
	if err := r.Requests.Finish(ctx, "req-1", "u1:t1", tok, false, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, started, _, err := r.Requests.Begin(ctx, "req-1", "u1:t1", time.Minute); err != nil || !started {
		t.Fatalf("Begin after the holder forgot it = %v, %v", started, err)
	}
}

// TestBreakerFailsFastWhileRedisHangs: while Redis does not answer, calls
// fail with Unavailable; after a few failures they stop waiting out the
// read timeout; once Redis answers again calls succeed.
func TestBreakerFailsFastWhileRedisHangs(t *testing.T) {
	prefix := testenv.Unique(t) + ":"
	testenv.MustRedis(t, prefix)
	proxy := testenv.StartProxy(t, testenv.RedisAddr())
	rdb := goredis.NewClient(&goredis.Options{Addr: proxy.Addr, MaxRetries: -1, ReadTimeout: 200 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
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
