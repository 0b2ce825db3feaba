package participant_test

import (
	"errors"
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/fake"
)

// The *_fast_test.go files test the domain's decisions over the in-memory
// fakes of the ports (participant/fake): no MariaDB or Redis, so they run
// under -short, in milliseconds. The integration tests beside them keep the
// adapters and the end-to-end paths honest.

// fastStart is where every fast test's clock starts.
var fastStart = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// fastEnv is a Service over fakes, with the clock they share.
type fastEnv struct {
	t     *testing.T
	clock *fake.Clock
	ports *fake.Ports
	svc   *participant.Service
}

func newFast(t *testing.T) *fastEnv {
	t.Helper()
	clock := fake.NewClock(fastStart)
	ports := fake.New(clock)
	ids, err := participant.NewIDGen(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := participant.NewService(ports.Deps(ids), participant.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &fastEnv{t: t, clock: clock, ports: ports, svc: svc}
}

// campaign stores a running campaign, changed by mod first.
func (e *fastEnv) campaign(mod func(*participant.Campaign)) *participant.Campaign {
	e.t.Helper()
	now := e.clock.Now()
	c := &participant.Campaign{Name: "spring", Type: "promo", Status: participant.CampaignActive,
		StartTime: now.Add(-time.Hour), EndTime: now.Add(60 * 24 * time.Hour), CreatedBy: "alice", ApprovedBy: "bob",
		CreatedAt: now, UpdatedAt: now}
	if mod != nil {
		mod(c)
	}
	if _, err := e.ports.Catalog.CreateCampaign(e.t.Context(), c, participant.Actor{Identity: "alice"}); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// template stores an active template of a running campaign — 5.00 off,
// 10 units over 2 sub-keys, valid for 30 days — changed by mod first, and
// sets its stock counters.
func (e *fastEnv) template(mod func(*participant.Template)) *participant.Template {
	e.t.Helper()
	return e.templateIn(e.campaign(nil), mod)
}

func (e *fastEnv) templateIn(c *participant.Campaign, mod func(*participant.Template)) *participant.Template {
	e.t.Helper()
	now := e.clock.Now()
	t := &participant.Template{CampaignID: c.ID, Name: "five off", Type: participant.FixedAmount, DiscountAmount: 500,
		TotalStock: 10, SubStockCount: 2, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(30 * 24 * time.Hour),
		Status: participant.TemplateActive, CreatedBy: "alice", ApprovedBy: "bob", Version: 1, CreatedAt: now, UpdatedAt: now}
	if mod != nil {
		mod(t)
	}
	ctx := e.t.Context()
	if _, err := e.ports.Catalog.CreateTemplate(ctx, t, participant.Actor{Identity: "alice"}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.ports.Stock.Set(ctx, t.ID, t.SubStockCount, t.TotalStock); err != nil {
		e.t.Fatal(err)
	}
	return t
}

// claim claims a coupon of tpl for user, which must succeed.
func (e *fastEnv) claim(tpl, user int64, requestID string) *participant.Coupon {
	e.t.Helper()
	c, err := e.svc.Claim(e.t.Context(), participant.ClaimRequest{RequestID: requestID, UserID: user, TemplateID: tpl})
	if err != nil {
		e.t.Fatalf("claim %s: %v", requestID, err)
	}
	return c
}

// remaining is the stock left in the counters of tpl.
func (e *fastEnv) remaining(tpl *participant.Template) int64 {
	e.t.Helper()
	n, ok, err := e.ports.Stock.Remaining(e.t.Context(), tpl.ID, tpl.SubStockCount)
	if err != nil || !ok {
		e.t.Fatalf("remaining stock of template %d: %d, %v, %v", tpl.ID, n, ok, err)
	}
	return n
}

// stored is the coupon as the store holds it.
func (e *fastEnv) stored(user int64, code string) *participant.Coupon {
	e.t.Helper()
	c, err := e.ports.Coupons.ByCode(e.t.Context(), user, code)
	if err != nil {
		e.t.Fatalf("read coupon %s: %v", code, err)
	}
	return c
}

// wantError fails unless err has code and reason; code "" wants no error.
func wantError(t *testing.T, what string, err error, code participant.Code, reason string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("%s: %v, want no error", what, err)
		}
		return
	}
	if got, gotReason := participant.ErrorCode(err), participant.ErrorReason(err); err == nil || got != code || gotReason != reason {
		t.Fatalf("%s: error %v (%s/%s), want %s/%s", what, err, got, gotReason, code, reason)
	}
}

func asError(err error, target **participant.Error) bool { return errors.As(err, target) }
