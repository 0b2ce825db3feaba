package participant_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// lostAnswers wraps the real coupon store. A write of a request ID it was
// told to lose answers ErrCommitUnknown once, as the store does when the
// connection drops while COMMIT is in flight: with commit the coupon is
// written first (the COMMIT reached MariaDB), without it nothing is.
type lostAnswers struct {
	participant.Coupons
	mu   sync.Mutex
	lose map[string]bool // request ID → whether the write commits
}

func (l *lostAnswers) loseAnswer(requestID string, commit bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lose == nil {
		l.lose = map[string]bool{}
	}
	l.lose[requestID] = commit
}

func (l *lostAnswers) Insert(ctx context.Context, c participant.Claim) error {
	l.mu.Lock()
	commit, lose := l.lose[c.Coupon.RequestID]
	delete(l.lose, c.Coupon.RequestID)
	l.mu.Unlock()
	if !lose {
		return l.Coupons.Insert(ctx, c)
	}
	if commit {
		if err := l.Coupons.Insert(ctx, c); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: connection lost while committing", participant.ErrCommitUnknown)
}

// wantStored fails unless c is the coupon the store holds for the request.
func (e *env) wantStored(t *testing.T, what string, c *participant.Coupon, err error, user int64, requestID string) {
	t.Helper()
	stored, serr := e.store.Coupons.ByRequest(ctxT(t), user, requestID)
	if serr != nil {
		t.Fatalf("%s: the store holds no coupon for %s: %v", what, requestID, serr)
	}
	if err != nil || c == nil || c.ID != stored.ID || c.Code != stored.Code {
		t.Fatalf("%s = %+v, %v; want the stored coupon %d (%s)", what, c, err, stored.ID, stored.Code)
	}
}

// wantCounts fails unless the template's counters and records agree with
// remaining units left and total − issued = free.
func (e *env) wantCounts(t *testing.T, tpl *couponv1.CouponTemplate, remaining, free int64) {
	t.Helper()
	if got, want := e.counts(t, tpl); got != remaining || want != free {
		t.Fatalf("remaining %d, total − issued %d; want %d and %d", got, want, remaining, free)
	}
}

// TestClaimRetryAfterUnknownCommitFindsCoupon: a claim whose commit
// succeeded but whose answer was lost (Unavailable to the caller) takes the
// last unit; its retry with the same request ID gets that coupon, whether
// the template is known sold out in memory, found sold out in Redis, the
// user is at the per-user limit or the template has closed since. A lost
// answer whose commit did not happen lets the retry issue at once, not
// after the in-flight TTL.
func TestClaimRetryAfterUnknownCommitFindsCoupon(t *testing.T) {
	e := newEnv(t)
	coupons := &lostAnswers{Coupons: e.store.Coupons}
	svc := e.service(t, 2, func(d *participant.Deps, cfg *participant.Config) {
		d.Coupons = coupons
		cfg.SoldOutRecheck = time.Hour
		cfg.RequestInFlightTTL = time.Hour // a retry that waited for it would time out
	})
	e.ageBuckets(t) // Redis has kept its data: no marker may have been lost
	claim := func(ctx context.Context, req string, user, tplID int64) (*participant.Coupon, error) {
		return svc.Claim(ctx, participant.ClaimRequest{RequestID: req, UserID: user, TemplateID: tplID})
	}
	firstUnknown := func(t *testing.T, req string, user, tplID int64, commit bool) {
		t.Helper()
		coupons.loseAnswer(req, commit)
		if _, err := claim(ctxT(t), req, user, tplID); participant.ErrorCode(err) != participant.EUNAVAILABLE {
			t.Fatalf("claim whose commit answer was lost = %v, want Unavailable", err)
		}
	}

	t.Run("sold out in memory", func(t *testing.T) {
		tpl := e.template(t, 1, 1, 48*time.Hour, 0)
		firstUnknown(t, "unknown-mem", 1, tpl.Id, true)
		if _, err := claim(ctxT(t), "unknown-mem-other", 2, tpl.Id); participant.ErrorReason(err) != participant.ReasonSoldOut {
			t.Fatalf("another user's claim = %v, want SOLD_OUT", err)
		}
		for i := range 2 {
			c, err := claim(ctxT(t), "unknown-mem", 1, tpl.Id)
			e.wantStored(t, fmt.Sprintf("retry %d", i+1), c, err, 1, "unknown-mem")
		}
		e.wantCounts(t, tpl, 0, 0)
	})

	t.Run("sold out in Redis", func(t *testing.T) {
		tpl := e.template(t, 1, 1, 48*time.Hour, 0)
		firstUnknown(t, "unknown-redis", 3, tpl.Id, true)
		c, err := claim(ctxT(t), "unknown-redis", 3, tpl.Id)
		e.wantStored(t, "retry", c, err, 3, "unknown-redis")
		if _, err := claim(ctxT(t), "unknown-redis-other", 4, tpl.Id); participant.ErrorReason(err) != participant.ReasonSoldOut {
			t.Fatalf("another user's claim = %v, want SOLD_OUT", err)
		}
		c, err = claim(ctxT(t), "unknown-redis", 3, tpl.Id)
		e.wantStored(t, "retry once known sold out", c, err, 3, "unknown-redis")
		e.wantCounts(t, tpl, 0, 0)
	})

	t.Run("user limit", func(t *testing.T) {
		tpl := e.template(t, 10, 1, 48*time.Hour, 0)
		if _, err := e.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, PerUserLimit: ptr(int32(1))}); err != nil {
			t.Fatal(err)
		}
		firstUnknown(t, "unknown-limit", 5, tpl.Id, true)
		c, err := claim(ctxT(t), "unknown-limit", 5, tpl.Id)
		e.wantStored(t, "retry", c, err, 5, "unknown-limit")
		if _, err := claim(ctxT(t), "unknown-limit-second", 5, tpl.Id); participant.ErrorReason(err) != participant.ReasonUserLimitReached {
			t.Fatalf("the user's second claim = %v, want USER_LIMIT_REACHED", err)
		}
		e.wantCounts(t, tpl, 9, 9)
	})

	t.Run("not committed", func(t *testing.T) {
		tpl := e.template(t, 2, 1, 48*time.Hour, 0)
		firstUnknown(t, "unknown-none", 6, tpl.Id, false)
		ctx, cancel := context.WithTimeout(ctxT(t), 10*time.Second)
		defer cancel()
		c, err := claim(ctx, "unknown-none", 6, tpl.Id)
		e.wantStored(t, "retry", c, err, 6, "unknown-none")
		// The lost answer's unit stays taken (its write might have
		// committed) until the stock audit: short, never oversold.
		e.wantCounts(t, tpl, 0, 1)
	})

	t.Run("template closed since", func(t *testing.T) {
		tpl := e.template(t, 5, 1, time.Hour, 0)
		firstUnknown(t, "unknown-closed", 7, tpl.Id, true)
		e.clk.Advance(2 * time.Hour) // the claim window has closed
		c, err := claim(ctxT(t), "unknown-closed", 7, tpl.Id)
		e.wantStored(t, "retry", c, err, 7, "unknown-closed")
		if _, err := claim(ctxT(t), "unknown-closed-other", 8, tpl.Id); participant.ErrorReason(err) != participant.ReasonTemplateNotActive {
			t.Fatalf("another user's claim = %v, want TEMPLATE_NOT_ACTIVE", err)
		}
	})
}

// zombie is a claim that marked its request ID, took the last unit and was
// writing its coupon when its service stopped answering.
type zombie struct {
	req    string
	coupon *participant.Coupon
}

func (e *env) zombie(t *testing.T, tpl *couponv1.CouponTemplate, req string, user int64) *zombie {
	t.Helper()
	fp := fmt.Sprintf("%d:%d", user, tpl.Id) // the claim's own fingerprint
	if _, started, _, _, err := e.redis.Requests.Begin(ctxT(t), req, fp, time.Hour); err != nil || !started {
		t.Fatalf("Begin = %v, %v", started, err)
	}
	if _, err := e.stock.Take(ctxT(t), tpl.Id, tpl.SubStockCount, uint64(user)); err != nil {
		t.Fatalf("Take: %v", err)
	}
	ids, err := participant.NewIDGen(9, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := e.clk.Now().UTC().Truncate(time.Microsecond)
	c := &participant.Coupon{ID: ids.Next(), TemplateID: tpl.Id, CampaignID: tpl.CampaignId, UserID: user, RequestID: req,
		Status: participant.CouponAvailable, ClaimedAt: now, ExpireAt: tpl.ValidUntil.AsTime().UTC()}
	c.Code = participant.CouponCode(c.ID)
	return &zombie{req: req, coupon: c}
}

// land commits the zombie's coupon, as its write finally does.
func (z *zombie) land(t *testing.T, e *env) {
	t.Helper()
	if err := e.store.Coupons.Insert(ctxT(t), participant.Claim{Coupon: z.coupon}); err != nil {
		t.Errorf("zombie's write: %v", err)
	}
}

// landOnTakeOver lets a zombie's write land as its marker is taken over.
type landOnTakeOver struct {
	participant.Requests
	land func()
	once sync.Once
}

func (l *landOnTakeOver) TakeOver(ctx context.Context, requestID string, held participant.Marker, fp string, ttl time.Duration) (string, bool, error) {
	l.once.Do(l.land)
	return l.Requests.TakeOver(ctx, requestID, held, fp, ttl)
}

// landAfterTake lets a zombie's write land after the next Take answered.
type landAfterTake struct {
	participant.Stock
	land func()
	once sync.Once
}

func (l *landAfterTake) Take(ctx context.Context, id int64, k int32, hint uint64) (participant.Ticket, error) {
	tk, err := l.Stock.Take(ctx, id, k, hint)
	l.once.Do(l.land)
	return tk, err
}

// TestClaimRetryAfterTakeoverFindsCoupon: a claim that marked its request
// ID, took the last unit and stopped answering (its service killed or
// frozen) is taken over by a retry after the in-flight TTL, on the
// service's clock. Wherever the dead claim's write lands — before the
// retry, as the retry takes the marker over, or even after the taker was
// refused — the retry, or at the latest the next one, gets that coupon,
// and the template is never oversold.
func TestClaimRetryAfterTakeoverFindsCoupon(t *testing.T) {
	e := newEnv(t)
	e.ageBuckets(t)
	const inFlight = 10 * time.Second
	service := func(t *testing.T, mod func(*participant.Deps)) *participant.Service {
		return e.service(t, 2, func(d *participant.Deps, cfg *participant.Config) {
			cfg.RequestInFlightTTL, cfg.SoldOutRecheck = inFlight, time.Hour
			if mod != nil {
				mod(d)
			}
		})
	}
	claim := func(svc *participant.Service, req string, user, tplID int64) (*participant.Coupon, error) {
		return svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: req, UserID: user, TemplateID: tplID})
	}
	wantSoldOut := func(svc *participant.Service, tplID int64) {
		t.Helper()
		if _, err := claim(svc, fmt.Sprintf("other-%d", tplID), 99, tplID); participant.ErrorReason(err) != participant.ReasonSoldOut {
			t.Fatalf("another user's claim = %v, want SOLD_OUT", err)
		}
	}

	t.Run("written before the retry", func(t *testing.T) {
		tpl := e.template(t, 1, 1, 48*time.Hour, 0)
		z := e.zombie(t, tpl, "dead-before", 11)
		z.land(t, e)
		svc := service(t, nil)
		e.clk.Advance(inFlight + time.Second)
		c, err := claim(svc, z.req, 11, tpl.Id)
		e.wantStored(t, "retry", c, err, 11, z.req)
		wantSoldOut(svc, tpl.Id)
		e.wantCounts(t, tpl, 0, 0)
	})

	t.Run("written as the marker is taken over", func(t *testing.T) {
		tpl := e.template(t, 1, 1, 48*time.Hour, 0)
		z := e.zombie(t, tpl, "dead-takeover", 12)
		svc := service(t, func(d *participant.Deps) {
			d.Requests = &landOnTakeOver{Requests: d.Requests, land: func() { z.land(t, e) }}
		})
		e.clk.Advance(inFlight + time.Second)
		c, err := claim(svc, z.req, 12, tpl.Id)
		e.wantStored(t, "retry that took the marker over", c, err, 12, z.req)
		wantSoldOut(svc, tpl.Id)
		c, err = claim(svc, z.req, 12, tpl.Id)
		e.wantStored(t, "retry once known sold out", c, err, 12, z.req)
		e.wantCounts(t, tpl, 0, 0)
	})

	t.Run("written after the taker was refused", func(t *testing.T) {
		tpl := e.template(t, 1, 1, 48*time.Hour, 0)
		z := e.zombie(t, tpl, "dead-late", 13)
		svc := service(t, func(d *participant.Deps) {
			d.Stock = &landAfterTake{Stock: d.Stock, land: func() { z.land(t, e) }}
		})
		e.clk.Advance(inFlight + time.Second)
		// The taker looked before the write landed, so its own answer
		// cannot know of it; it must leave the request maybe issued.
		if _, err := claim(svc, z.req, 13, tpl.Id); participant.ErrorReason(err) != participant.ReasonSoldOut {
			t.Fatalf("the taker = %v, want SOLD_OUT", err)
		}
		for i := range 2 {
			c, err := claim(svc, z.req, 13, tpl.Id)
			e.wantStored(t, fmt.Sprintf("retry %d after the taker", i+1), c, err, 13, z.req)
		}
		e.wantCounts(t, tpl, 0, 0)
	})
}
