package participant_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
)

func TestFastClaim(t *testing.T) {
	req := func(id string, user, tpl int64) participant.ClaimRequest {
		return participant.ClaimRequest{RequestID: id, UserID: user, TemplateID: tpl}
	}
	tests := []struct {
		name     string
		campaign func(*participant.Campaign)
		template func(*participant.Template)
		// claims are made in turn for the template's ID tpl (other is the
		// ID of a second template of the same campaign); all but the last
		// must succeed, the last is checked.
		claims     func(tpl, other int64) []participant.ClaimRequest
		wantCode   participant.Code
		wantReason string
		wantField  string
		// wantTaken is the stock the claims took in the end.
		wantTaken int64
	}{
		{
			name:      "issues a coupon",
			claims:    func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, tpl)} },
			wantTaken: 1,
		},
		{
			name: "replay of the same request id",
			claims: func(tpl, _ int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r1", 7, tpl), req("r1", 7, tpl)}
			},
			wantTaken: 1,
		},
		{
			name: "same request id for another template",
			claims: func(tpl, other int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r1", 7, tpl), req("r1", 7, other)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonRequestIDConflict, wantTaken: 1,
		},
		{
			name: "same request id for another user",
			claims: func(tpl, _ int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r1", 7, tpl), req("r1", 8, tpl)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonRequestIDConflict, wantTaken: 1,
		},
		{
			name:     "per-user limit",
			template: func(t *participant.Template) { t.PerUserLimit = 2 },
			claims: func(tpl, _ int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r1", 7, tpl), req("r2", 7, tpl), req("r3", 7, tpl)}
			},
			// the refused claim's unit goes back
			wantCode: participant.EREFUSED, wantReason: participant.ReasonUserLimitReached, wantTaken: 2,
		},
		{
			name:     "per-user limit counts one user only",
			template: func(t *participant.Template) { t.PerUserLimit = 1 },
			claims: func(tpl, _ int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r1", 7, tpl), req("r2", 8, tpl)}
			},
			wantTaken: 2,
		},
		{
			name:     "sold out",
			template: func(t *participant.Template) { t.TotalStock = 2 },
			claims: func(tpl, _ int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r1", 7, tpl), req("r2", 8, tpl), req("r3", 9, tpl)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonSoldOut, wantTaken: 2,
		},
		{
			// one user's claims start at the same sub-key and move on
			name:     "every sub-key taken before sold out",
			template: func(t *participant.Template) { t.TotalStock, t.SubStockCount = 3, 3 },
			claims: func(tpl, _ int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r1", 7, tpl), req("r2", 7, tpl), req("r3", 7, tpl), req("r4", 7, tpl)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonSoldOut, wantTaken: 3,
		},
		{
			name:     "template paused",
			template: func(t *participant.Template) { t.Status = participant.TemplatePaused },
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, tpl)} },
			wantCode: participant.EREFUSED, wantReason: participant.ReasonTemplateNotActive,
		},
		{
			name:     "template pending approval",
			template: func(t *participant.Template) { t.Status = participant.TemplatePendingApproval },
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, tpl)} },
			wantCode: participant.EREFUSED, wantReason: participant.ReasonTemplateNotActive,
		},
		{
			name:     "before the validity window",
			template: func(t *participant.Template) { t.ValidFrom = fastStart.Add(time.Hour) },
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, tpl)} },
			wantCode: participant.EREFUSED, wantReason: participant.ReasonTemplateNotActive,
		},
		{
			name: "after the validity window",
			template: func(t *participant.Template) {
				t.ValidFrom, t.ValidUntil = fastStart.Add(-2*time.Hour), fastStart.Add(-time.Hour)
			},
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, tpl)} },
			wantCode: participant.EREFUSED, wantReason: participant.ReasonTemplateNotActive,
		},
		{
			name:     "at the end of the validity window",
			template: func(t *participant.Template) { t.ValidUntil = fastStart },
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, tpl)} },
			wantCode: participant.EREFUSED, wantReason: participant.ReasonTemplateNotActive,
		},
		{
			name:     "campaign paused",
			campaign: func(c *participant.Campaign) { c.Status = participant.CampaignPaused },
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, tpl)} },
			wantCode: participant.EREFUSED, wantReason: participant.ReasonCampaignNotActive,
		},
		{
			name:     "campaign not started",
			campaign: func(c *participant.Campaign) { c.StartTime = fastStart.Add(time.Minute) },
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, tpl)} },
			wantCode: participant.EREFUSED, wantReason: participant.ReasonCampaignNotActive,
		},
		{
			name: "no such template",
			claims: func(tpl, _ int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r1", 7, tpl+100)}
			},
			wantCode: participant.ENOTFOUND, wantReason: participant.ReasonNotFound,
		},
		{
			name:     "missing request id",
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("", 7, tpl)} },
			wantCode: participant.EINVALID, wantReason: participant.ReasonInvalidArgument, wantField: "request_id",
		},
		{
			name: "request id with a control character",
			claims: func(tpl, _ int64) []participant.ClaimRequest {
				return []participant.ClaimRequest{req("r\x001", 7, tpl)}
			},
			wantCode: participant.EINVALID, wantReason: participant.ReasonInvalidArgument, wantField: "request_id",
		},
		{
			name:     "no user",
			claims:   func(tpl, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 0, tpl)} },
			wantCode: participant.EINVALID, wantReason: participant.ReasonInvalidArgument, wantField: "user_id",
		},
		{
			name:     "negative template",
			claims:   func(_, _ int64) []participant.ClaimRequest { return []participant.ClaimRequest{req("r1", 7, -1)} },
			wantCode: participant.EINVALID, wantReason: participant.ReasonInvalidArgument, wantField: "template_id",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFast(t)
			camp := e.campaign(tc.campaign)
			tpl := e.templateIn(camp, tc.template)
			other := e.templateIn(camp, nil)
			claims := tc.claims(tpl.ID, other.ID)
			var first *participant.Coupon
			for i, r := range claims[:len(claims)-1] {
				c := e.claim(r.TemplateID, r.UserID, r.RequestID)
				if i == 0 {
					first = c
				}
			}
			last := claims[len(claims)-1]
			c, err := e.svc.Claim(t.Context(), last)
			wantError(t, "last claim", err, tc.wantCode, tc.wantReason)
			if tc.wantField != "" {
				var pe *participant.Error
				if !asError(err, &pe) || pe.Metadata["field"] != tc.wantField {
					t.Errorf("error %v names field %q, want %q", err, pe.Metadata["field"], tc.wantField)
				}
			}
			if taken := tpl.TotalStock - e.remaining(tpl); taken != tc.wantTaken {
				t.Errorf("stock taken = %d, want %d", taken, tc.wantTaken)
			}
			if err != nil {
				return
			}
			if c.UserID != last.UserID || c.TemplateID != last.TemplateID || c.RequestID != last.RequestID ||
				c.Status != participant.CouponAvailable || !participant.ValidCode(c.Code) {
				t.Fatalf("coupon = %+v, want an AVAILABLE coupon of template %d for user %d", c, last.TemplateID, last.UserID)
			}
			if want := tpl.ValidUntil; !c.ExpireAt.Equal(want) {
				t.Errorf("expire at %v, want %v", c.ExpireAt, want)
			}
			if first != nil && first.RequestID == c.RequestID && (first.ID != c.ID || first.Code != c.Code) {
				t.Errorf("replay gave coupon %s, the first call %s", c.Code, first.Code)
			}
			if s := e.stored(c.UserID, c.Code); s.ID != c.ID || s.Status != participant.CouponAvailable {
				t.Errorf("stored coupon = %+v, want the claimed one", s)
			}
		})
	}
}

// TestFastClaimRefusalFreesRequestID: a claim refused for good leaves no
// coupon behind, so its request ID succeeds once the cause is gone.
func TestFastClaimRefusalFreesRequestID(t *testing.T) {
	e := newFast(t)
	tpl := e.template(func(t *participant.Template) { t.TotalStock = 1 })
	e.claim(tpl.ID, 7, "r1")
	r := participant.ClaimRequest{RequestID: "r2", UserID: 8, TemplateID: tpl.ID}
	_, err := e.svc.Claim(t.Context(), r)
	wantError(t, "claim of the sold-out template", err, participant.EREFUSED, participant.ReasonSoldOut)

	res, err := e.svc.AddStock(t.Context(), participant.StockOp{RequestID: "top-up-1", TemplateID: tpl.ID, Amount: 1, Operator: "alice"})
	if err != nil {
		t.Fatalf("add stock: %v", err)
	}
	if res.Template.TotalStock != 2 {
		t.Fatalf("total stock after top-up = %d, want 2", res.Template.TotalStock)
	}
	// The sold-out memo lapses after SoldOutRecheck.
	e.clock.Advance(time.Second)
	c, err := e.svc.Claim(t.Context(), r)
	wantError(t, "claim after the top-up", err, "", "")
	if c.UserID != 8 || c.RequestID != "r2" {
		t.Fatalf("coupon = %+v, want user 8's for r2", c)
	}
}

// TestFastClaimDaysAfterClaim: a template valid for days after the claim
// expires its coupons then, or at its own end if sooner.
func TestFastClaimDaysAfterClaim(t *testing.T) {
	tests := []struct {
		name  string
		days  int32
		until time.Duration
		want  time.Duration
	}{
		{"days after claim", 3, 30 * 24 * time.Hour, 3 * 24 * time.Hour},
		{"template ends first", 3, 24 * time.Hour, 24 * time.Hour},
		{"no days: template end", 0, 10 * 24 * time.Hour, 10 * 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFast(t)
			tpl := e.template(func(t *participant.Template) {
				t.ValidDaysAfterClaim, t.ValidUntil = tc.days, fastStart.Add(tc.until)
			})
			c := e.claim(tpl.ID, 7, "r1")
			if want := fastStart.Add(tc.want); !c.ExpireAt.Equal(want) {
				t.Errorf("expire at %v, want %v", c.ExpireAt, want)
			}
		})
	}
}

// TestFastExpiry: a coupon past its expiry reads EXPIRED before the sweeper
// runs, and the sweeper then writes it, and ends the template past its window.
func TestFastExpiry(t *testing.T) {
	e := newFast(t)
	tpl := e.template(func(t *participant.Template) { t.ValidUntil = fastStart.Add(24 * time.Hour) })
	c := e.claim(tpl.ID, 7, "r1")
	e.clock.Advance(25 * time.Hour)
	got, err := e.svc.GetCoupon(t.Context(), 7, c.Code, 0)
	if err != nil || got.Status != participant.CouponExpired {
		t.Fatalf("read after expiry = %+v, %v; want EXPIRED", got, err)
	}
	if s := e.stored(7, c.Code); s.Status != participant.CouponAvailable {
		t.Fatalf("stored before the sweep = %v, want AVAILABLE", s.Status)
	}
	w := participant.NewSweeper(e.svc, e.ports.Expirer)
	if ran, err := w.RunOnce(t.Context()); !ran || err != nil {
		t.Fatalf("sweep = %v, %v; want a round", ran, err)
	}
	if s := e.stored(7, c.Code); s.Status != participant.CouponExpired {
		t.Errorf("stored after the sweep = %v, want EXPIRED", s.Status)
	}
	if st := w.Stats(); st.Expired != 1 || st.Ended != 1 {
		t.Errorf("sweep stats = %+v, want 1 expired and 1 ended", st)
	}
	stored, err := e.ports.Catalog.GetTemplate(t.Context(), tpl.ID)
	if err != nil || stored.Status != participant.TemplateEnded {
		t.Errorf("template after the sweep = %v, %v; want ENDED", stored.Status, err)
	}
}

// TestFastReads: a user reads only their own coupons, and another user's
// code is the same NOT_FOUND as no coupon at all.
func TestFastReads(t *testing.T) {
	e := newFast(t)
	tpl := e.template(nil)
	mine := e.claim(tpl.ID, 7, "r1")
	e.claim(tpl.ID, 7, "r2")
	theirs := e.claim(tpl.ID, 8, "r3")

	cs, next, err := e.svc.ListUserCoupons(t.Context(), 7, participant.CouponFilter{}, participant.Page{Size: 1})
	if err != nil || len(cs) != 1 || next == "" {
		t.Fatalf("first page = %d coupons, next %q, %v; want 1 and a cursor", len(cs), next, err)
	}
	rest, next, err := e.svc.ListUserCoupons(t.Context(), 7, participant.CouponFilter{}, participant.Page{Size: 1, After: next})
	if err != nil || len(rest) != 1 || rest[0].ID == cs[0].ID {
		t.Fatalf("second page = %v, next %q, %v; want the other coupon", rest, next, err)
	}
	if got, err := e.svc.GetCoupon(t.Context(), 7, mine.Code, 0); err != nil || got.ID != mine.ID {
		t.Fatalf("get own coupon = %v, %v", got, err)
	}
	_, err = e.svc.GetCoupon(t.Context(), 7, theirs.Code, 0)
	wantError(t, "get another user's coupon", err, participant.ENOTFOUND, participant.ReasonCouponNotFound)
	_, err = e.svc.GetCoupon(t.Context(), 7, "", theirs.ID)
	wantError(t, "get another user's coupon by id", err, participant.ENOTFOUND, participant.ReasonCouponNotFound)
	_, err = e.svc.GetCoupon(t.Context(), 7, "not-a-code", 0)
	wantError(t, "get a malformed code", err, participant.EINVALID, participant.ReasonInvalidArgument)
}

// TestFastClaimRetryPastMarkerTTL: a retry that comes after Redis has
// forgotten its request ID is answered with the first coupon when the
// write finds the ID taken or the per-user limit reached — the durable
// record answers, not the marker — and its unit of stock goes back.
func TestFastClaimRetryPastMarkerTTL(t *testing.T) {
	for _, limit := range []int32{0, 1} {
		t.Run(fmt.Sprintf("per-user limit %d", limit), func(t *testing.T) {
			e := newFast(t)
			tpl := e.template(func(t *participant.Template) { t.PerUserLimit = limit })
			first := e.claim(tpl.ID, 7, "r1")
			e.clock.Advance(participant.DefaultConfig().RequestDoneTTL + time.Hour)
			again := e.claim(tpl.ID, 7, "r1")
			if again.ID != first.ID || again.Code != first.Code {
				t.Fatalf("retry got coupon %d %s, want the first, %d %s", again.ID, again.Code, first.ID, first.Code)
			}
			if got := e.remaining(tpl); got != tpl.TotalStock-1 {
				t.Fatalf("remaining stock = %d, want %d: the retry's unit must go back", got, tpl.TotalStock-1)
			}
		})
	}
}
