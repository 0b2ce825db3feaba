package fake_test

import (
	"errors"
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/fake"
)

var start = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func TestStockNeverNegativeAndGivesOnce(t *testing.T) {
	ctx := t.Context()
	s := fake.NewStock()
	if _, err := s.Take(ctx, 1, 2, 0); !errors.Is(err, participant.ErrStockMissing) {
		t.Fatalf("take without counters: %v, want ErrStockMissing", err)
	}
	if err := s.Set(ctx, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	var tickets []participant.Ticket
	for range 3 {
		tk, err := s.Take(ctx, 1, 2, 0)
		if err != nil {
			t.Fatalf("take: %v", err)
		}
		tickets = append(tickets, tk)
	}
	if _, err := s.Take(ctx, 1, 2, 0); !errors.Is(err, participant.ErrSoldOut) {
		t.Fatalf("take of the empty counters: %v, want ErrSoldOut", err)
	}
	for range 2 {
		if err := s.Give(ctx, tickets[0]); err != nil {
			t.Fatal(err)
		}
	}
	if n, ok, _ := s.Remaining(ctx, 1, 2); !ok || n != 1 {
		t.Fatalf("remaining after giving one ticket twice = %d, %v; want 1", n, ok)
	}
	// A ticket of the old generation is not given to rebuilt counters.
	if err := s.Set(ctx, 1, 2, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Give(ctx, tickets[1]); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := s.Remaining(ctx, 1, 2); n != 0 {
		t.Fatalf("remaining after giving an old generation's ticket = %d, want 0", n)
	}
	gen, _, _ := s.Generation(ctx, 1)
	for range 2 {
		if ok, err := s.Add(ctx, 1, 2, 5, gen, "op-1"); !ok || err != nil {
			t.Fatalf("add = %v, %v", ok, err)
		}
	}
	if ok, _ := s.Add(ctx, 1, 2, 5, "other", "op-2"); ok {
		t.Fatal("add to another generation succeeded")
	}
	if n, _, _ := s.Remaining(ctx, 1, 2); n != 5 {
		t.Fatalf("remaining after one top-up sent twice = %d, want 5", n)
	}
}

func TestLeasesLapseByTheClock(t *testing.T) {
	clock := fake.NewClock(start)
	l := fake.NewLeases(clock.Now)
	unlock, ok, err := l.Lock(t.Context(), "job", time.Minute)
	if !ok || err != nil {
		t.Fatalf("first lock = %v, %v", ok, err)
	}
	if _, ok, _ := l.Lock(t.Context(), "job", time.Minute); ok {
		t.Fatal("second lock taken while the first holds")
	}
	clock.Advance(time.Minute)
	unlock2, ok, _ := l.Lock(t.Context(), "job", time.Minute)
	if !ok {
		t.Fatal("lock not taken after the first lapsed")
	}
	unlock() // the lapsed holder's release must not free the new holder's lease
	if _, ok, _ := l.Lock(t.Context(), "job", time.Minute); ok {
		t.Fatal("a lapsed holder's unlock released another's lease")
	}
	unlock2()
	if _, ok, _ := l.Lock(t.Context(), "job", time.Minute); !ok {
		t.Fatal("lock not taken after its release")
	}
}

func TestRequestMarkers(t *testing.T) {
	ctx := t.Context()
	clock := fake.NewClock(start)
	r := fake.NewRequests(clock.Now)
	tok, started, _, born, err := r.Begin(ctx, "r1", "fp", time.Hour)
	if !started || err != nil || !born.Equal(start) {
		t.Fatalf("begin = %v, %v, born %v", started, err, born)
	}
	_, started, held, _, _ := r.Begin(ctx, "r1", "other", time.Hour)
	if started || held.FP != "fp" || held.Token != tok {
		t.Fatalf("second begin = started %v, held %+v", started, held)
	}
	if err := r.MaybeIssued(ctx, "r1", "fp", tok); err != nil {
		t.Fatal(err)
	}
	m, _, _ := r.Peek(ctx, "r1")
	if m == nil || !m.MaybeIssued {
		t.Fatalf("marker after MaybeIssued = %+v", m)
	}
	if _, ok, _ := r.TakeOver(ctx, "r1", held, "fp", time.Hour); ok {
		t.Fatal("take-over of a changed marker succeeded")
	}
	tok2, ok, _ := r.TakeOver(ctx, "r1", *m, "fp", time.Hour)
	if !ok {
		t.Fatal("take-over of the marker held failed")
	}
	if err := r.Forget(ctx, "r1", "fp", tok); err != nil {
		t.Fatal(err)
	}
	if m, _, _ := r.Peek(ctx, "r1"); m == nil || m.Token != tok2 {
		t.Fatalf("a stale token's Forget dropped the marker: %+v", m)
	}
	clock.Advance(time.Hour)
	if m, _, _ := r.Peek(ctx, "r1"); m != nil {
		t.Fatalf("marker outlived its TTL: %+v", m)
	}
}

func TestBlobsStoreOnlyUnderTheirStamp(t *testing.T) {
	ctx := t.Context()
	clock := fake.NewClock(start)
	b := fake.NewBlobs(clock.Now)
	stamp, _ := b.Stamp(ctx, "k")
	if err := b.DelBlobs(ctx, "k"); err != nil { // an invalidation after the read
		t.Fatal(err)
	}
	if ok, _ := b.PutBlob(ctx, "k", []byte("stale"), time.Minute, stamp); ok {
		t.Fatal("a value read before an invalidation was stored")
	}
	stamp, _ = b.Stamp(ctx, "k")
	if ok, _ := b.PutBlob(ctx, "k", []byte("fresh"), time.Minute, stamp); !ok {
		t.Fatal("a value under the current stamp was not stored")
	}
	if v, ok, _ := b.GetBlob(ctx, "k"); !ok || string(v) != "fresh" {
		t.Fatalf("get = %q, %v", v, ok)
	}
	clock.Advance(time.Minute)
	if _, ok, _ := b.GetBlob(ctx, "k"); ok {
		t.Fatal("value outlived its TTL")
	}
}
