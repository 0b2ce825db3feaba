package participant_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
)

// countingStock counts Takes that reach Redis.
type countingStock struct {
	participant.Stock
	takes atomic.Int64
}

func (c *countingStock) Take(ctx context.Context, id int64, k int32, hint uint64) (participant.Ticket, error) {
	c.takes.Add(1)
	return c.Stock.Take(ctx, id, k, hint)
}

// countingCoupons counts replay reads.
type countingCoupons struct {
	participant.Coupons
	byRequest atomic.Int64
}

func (c *countingCoupons) ByRequest(ctx context.Context, user int64, req string) (*participant.Coupon, error) {
	c.byRequest.Add(1)
	return c.Coupons.ByRequest(ctx, user, req)
}

// ageBuckets makes every request-marker bucket look a day older than the
// marker TTL, as on a Redis that has kept its data.
func (e *env) ageBuckets(t *testing.T) {
	t.Helper()
	old := time.Now().Add(-48 * time.Hour).UnixMilli()
	for b := range 64 {
		if err := e.srv.App.Redis().Set(ctxT(t), fmt.Sprintf("%sreq:{%d}:born", e.srv.Prefix, b), old, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSoldOutFromMemory: once a template is found sold out, claims are
// refused without asking Redis for stock and without a MySQL read, until
// a top-up; a retry of a claim that succeeded still gets its coupon; and
// after Redis lost its data a refusal looks for the earlier coupon.
func TestSoldOutFromMemory(t *testing.T) {
	e := newEnv(t)
	tpl := e.template(t, 2, 1, 48*time.Hour, 0)
	stock := &countingStock{Stock: e.stock}
	coupons := &countingCoupons{Coupons: e.store.Coupons}
	svc := e.service(t, 2, func(d *participant.Deps, cfg *participant.Config) {
		d.Stock, d.Coupons = stock, coupons
		cfg.SoldOutRecheck = time.Hour
	})
	e.ageBuckets(t)
	claim := func(req string, user int64) (*participant.Coupon, error) {
		return svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: req, UserID: user, TemplateID: tpl.Id})
	}
	first, err := claim("so-1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := claim("so-2", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := claim("so-3", 3); participant.ErrorReason(err) != participant.ReasonSoldOut {
		t.Fatalf("claim on an empty template = %v, want SOLD_OUT", err)
	}
	takes, reads := stock.takes.Load(), coupons.byRequest.Load()
	for i := range 20 {
		_, err := claim(fmt.Sprintf("so-storm-%d", i), int64(10+i))
		if participant.ErrorReason(err) != participant.ReasonSoldOut {
			t.Fatalf("storm claim = %v, want SOLD_OUT", err)
		}
	}
	if got := stock.takes.Load() - takes; got != 0 {
		t.Fatalf("%d stock takes reached Redis for a template known sold out", got)
	}
	if got := coupons.byRequest.Load() - reads; got != 0 {
		t.Fatalf("%d replay reads for fresh request IDs refused at a sold-out template", got)
	}
	// A retry of the first claim still gets its coupon.
	again, err := claim("so-1", 1)
	if err != nil || again.ID != first.ID {
		t.Fatalf("retry of a successful claim = %v, %v; want coupon %d", again, err, first.ID)
	}
	// Redis loses its request markers: a refusal must now look in MySQL.
	testenv.DeleteKeys(t, e.srv.App.Redis(), e.srv.Prefix+"req:")
	lost, err := claim("so-2", 2)
	if err != nil || lost.UserID != 2 {
		t.Fatalf("retry after Redis lost its markers = %v, %v; want user 2's coupon", lost, err)
	}
	// A top-up on this replica ends the sold-out memory at once.
	if _, err := svc.AddStock(ctxT(t), participant.StockOp{RequestID: "so-topup", TemplateID: tpl.Id, Amount: 1, Operator: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := claim("so-4", 4); err != nil {
		t.Fatalf("claim after a top-up = %v", err)
	}
}

// setBorn makes every request-marker bucket look born at the given time.
func (e *env) setBorn(t *testing.T, at time.Time) {
	t.Helper()
	for b := range 64 {
		if err := e.srv.App.Redis().Set(ctxT(t), fmt.Sprintf("%sreq:{%d}:born", e.srv.Prefix, b), at.UnixMilli(), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSoldOutReplayOnlyForOlderTemplates: within the marker TTL of a
// bucket's birth, a refusal replays only for a template that existed
// before the birth (its coupons' markers may have been lost); a template
// created after it cannot have an older coupon, so its sold-out storm
// costs no MySQL read, while a retry of its own successful claim still
// gets the coupon.
func TestSoldOutReplayOnlyForOlderTemplates(t *testing.T) {
	e := newEnv(t)
	coupons := &countingCoupons{Coupons: e.store.Coupons}
	svc := e.service(t, 2, func(d *participant.Deps, cfg *participant.Config) {
		d.Coupons = coupons
		cfg.SoldOutRecheck = time.Hour
	})
	storm := func(tplID int64, prefix string) int64 {
		t.Helper()
		before := coupons.byRequest.Load()
		for i := range 10 {
			_, err := svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: fmt.Sprintf("%s-%d", prefix, i), UserID: int64(100 + i), TemplateID: tplID})
			if participant.ErrorReason(err) != participant.ReasonSoldOut {
				t.Fatalf("storm claim = %v, want SOLD_OUT", err)
			}
		}
		return coupons.byRequest.Load() - before
	}

	// Buckets born a minute ago (Redis restarted), template created now.
	e.setBorn(t, time.Now().Add(-time.Minute))
	fresh := e.template(t, 1, 1, 48*time.Hour, 0)
	first, err := svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: "new-1", UserID: 1, TemplateID: fresh.Id})
	if err != nil {
		t.Fatal(err)
	}
	if n := storm(fresh.Id, "new-storm"); n != 0 {
		t.Fatalf("%d replay reads refusing a template newer than the buckets", n)
	}
	again, err := svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: "new-1", UserID: 1, TemplateID: fresh.Id})
	if err != nil || again.ID != first.ID {
		t.Fatalf("retry of the successful claim = %v, %v; want coupon %d", again, err, first.ID)
	}
	if !again.ClaimedAt.Equal(first.ClaimedAt) || !again.ExpireAt.Equal(first.ExpireAt) {
		t.Fatalf("retry answered claimed %v expiring %v, the first answer %v and %v", again.ClaimedAt, again.ExpireAt, first.ClaimedAt, first.ExpireAt)
	}

	// A template older than the buckets: its refusals must look.
	old := e.template(t, 1, 1, 48*time.Hour, 0)
	if _, err := svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: "old-1", UserID: 2, TemplateID: old.Id}); err != nil {
		t.Fatal(err)
	}
	e.setBorn(t, time.Now())
	if n := storm(old.Id, "old-storm"); n != 10 {
		t.Fatalf("%d replay reads refusing a template older than the buckets, want 10", n)
	}
	testenv.DeleteKeys(t, e.srv.App.Redis(), e.srv.Prefix+"req:")
	lost, err := svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: "old-1", UserID: 2, TemplateID: old.Id})
	if err != nil || lost.UserID != 2 {
		t.Fatalf("retry after Redis lost its markers = %v, %v; want user 2's coupon", lost, err)
	}
}

// TestDeadClaimIsTakenOver: a claim that marked its request ID and died
// before writing blocks its retries only for the in-flight TTL; a retry
// then takes the mark over and issues the coupon, once.
func TestDeadClaimIsTakenOver(t *testing.T) {
	e := newEnv(t)
	tpl := e.template(t, 10, 1, 48*time.Hour, 0)
	svc := e.service(t, 2, func(_ *participant.Deps, cfg *participant.Config) { cfg.RequestInFlightTTL = 300 * time.Millisecond })
	fp := fmt.Sprintf("%d:%d", 7, tpl.Id) // the claim's own fingerprint
	if _, started, _, _, err := e.redis.Requests.Begin(ctxT(t), "dead-1", fp, time.Hour); err != nil || !started {
		t.Fatalf("Begin = %v, %v", started, err)
	}
	c, err := svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: "dead-1", UserID: 7, TemplateID: tpl.Id})
	if err != nil {
		t.Fatalf("retry of a dead claim = %v", err)
	}
	again, err := svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: "dead-1", UserID: 7, TemplateID: tpl.Id})
	if err != nil || again.ID != c.ID {
		t.Fatalf("second retry = %v, %v; want coupon %d", again, err, c.ID)
	}
	if got, want := e.counts(t, tpl); got != 9 || want != 9 {
		t.Fatalf("remaining %d, total − issued %d; want 9 and 9", got, want)
	}
}
