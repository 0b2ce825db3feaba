package participant_test

import (
	"testing"

	"github.com/opencoupon/coupon/participant"
)

const fastPhone = "+8613800138000"

func TestFastClaimByPhone(t *testing.T) {
	preq := func(id, phone string, tpl int64) participant.PhoneClaimRequest {
		return participant.PhoneClaimRequest{RequestID: id, Phone: phone, TemplateID: tpl}
	}
	tests := []struct {
		name     string
		template func(*participant.Template)
		boundTo  int64 // the phone is bound to this user first
		// claims are made in turn; all but the last must succeed.
		claims     func(tpl int64) []participant.PhoneClaimRequest
		byUser     []participant.ClaimRequest // claims by user ID made first
		wantCode   participant.Code
		wantReason string
		wantUser   int64 // the owner of the coupon answered (0: pending)
		wantTaken  int64
	}{
		{
			name: "pending for an unbound phone",
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", fastPhone, tpl)}
			},
			wantTaken: 1,
		},
		{
			name: "mainland number without its country code",
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", "138 0013 8000", tpl), preq("p1", fastPhone, tpl)}
			},
			wantTaken: 1,
		},
		{
			name: "replay of the same request id",
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", fastPhone, tpl), preq("p1", fastPhone, tpl)}
			},
			wantTaken: 1,
		},
		{
			name: "same request id for another phone",
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", fastPhone, tpl), preq("p1", "+8613900139000", tpl)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonRequestIDConflict, wantTaken: 1,
		},
		{
			name:   "request id of a claim by user ID",
			byUser: []participant.ClaimRequest{{RequestID: "p1", UserID: fastUser}},
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", fastPhone, tpl)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonRequestIDConflict, wantTaken: 1,
		},
		{
			name:     "per-user limit applies to the phone",
			template: func(t *participant.Template) { t.PerUserLimit = 1 },
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", fastPhone, tpl), preq("p2", fastPhone, tpl)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonUserLimitReached, wantTaken: 1,
		},
		{
			name:    "a bound phone claims for its user",
			boundTo: fastUser,
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", fastPhone, tpl)}
			},
			wantUser:  fastUser,
			wantTaken: 1,
		},
		{
			name:     "a bound phone is held to its user's limit",
			template: func(t *participant.Template) { t.PerUserLimit = 1 },
			boundTo:  fastUser,
			byUser:   []participant.ClaimRequest{{RequestID: "u1", UserID: fastUser}},
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", fastPhone, tpl)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonUserLimitReached, wantTaken: 1,
		},
		{
			name:     "sold out",
			template: func(t *participant.Template) { t.TotalStock = 1 },
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", fastPhone, tpl), preq("p2", "+8613900139000", tpl)}
			},
			wantCode: participant.EREFUSED, wantReason: participant.ReasonSoldOut, wantTaken: 1,
		},
		{
			name: "not a phone number",
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", "call me", tpl)}
			},
			wantCode: participant.EINVALID, wantReason: participant.ReasonInvalidArgument,
		},
		{
			name: "a +86 number that is no mainland mobile",
			claims: func(tpl int64) []participant.PhoneClaimRequest {
				return []participant.PhoneClaimRequest{preq("p1", "+861234567890", tpl)}
			},
			wantCode: participant.EINVALID, wantReason: participant.ReasonInvalidArgument,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFast(t)
			tpl := e.template(tc.template)
			if tc.boundTo != 0 {
				if _, err := e.svc.BindPhone(t.Context(), tc.boundTo, fastPhone); err != nil {
					t.Fatalf("bind: %v", err)
				}
			}
			for _, r := range tc.byUser {
				e.claim(tpl.ID, r.UserID, r.RequestID)
			}
			claims := tc.claims(tpl.ID)
			var first *participant.Coupon
			for i, r := range claims[:len(claims)-1] {
				c, err := e.svc.ClaimByPhone(t.Context(), r)
				if err != nil {
					t.Fatalf("claim %d: %v", i, err)
				}
				if i == 0 {
					first = c
				}
			}
			last := claims[len(claims)-1]
			c, err := e.svc.ClaimByPhone(t.Context(), last)
			wantError(t, "last claim", err, tc.wantCode, tc.wantReason)
			if taken := tpl.TotalStock - e.remaining(tpl); taken != tc.wantTaken {
				t.Errorf("stock taken = %d, want %d", taken, tc.wantTaken)
			}
			if err != nil {
				return
			}
			if c.UserID != tc.wantUser || c.TemplateID != tpl.ID || c.Status != participant.CouponAvailable {
				t.Fatalf("coupon = %+v, want an AVAILABLE coupon of template %d for user %d", c, tpl.ID, tc.wantUser)
			}
			if tc.wantUser == 0 && c.Phone.E164() != fastPhone {
				t.Errorf("pending coupon for phone %s, want %s", c.Phone, participant.Phone(fastPhone))
			}
			if first != nil && first.RequestID == c.RequestID && first.Code != c.Code {
				t.Errorf("replay gave coupon %s, the first call %s", c.Code, first.Code)
			}
		})
	}
}

func TestFastBindPhone(t *testing.T) {
	e := newFast(t)
	tpl := e.template(func(t *participant.Template) { t.PerUserLimit = 2 })
	var pending []*participant.Coupon
	for _, id := range []string{"p1", "p2"} {
		c, err := e.svc.ClaimByPhone(t.Context(), participant.PhoneClaimRequest{RequestID: id, Phone: fastPhone, TemplateID: tpl.ID})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, c)
	}
	// The user is at the limit already: moved coupons count past it.
	e.claim(tpl.ID, fastUser, "u1")
	e.claim(tpl.ID, fastUser, "u2")

	moved, err := e.svc.BindPhone(t.Context(), fastUser, fastPhone)
	if err != nil {
		t.Fatalf("bind: %v", err)
	}
	if len(moved) != 2 {
		t.Fatalf("bind moved %d coupons, want 2", len(moved))
	}
	for i, c := range moved {
		if c.UserID != fastUser || c.ID != pending[i].ID || c.Code != pending[i].Code {
			t.Errorf("moved coupon %d = %+v, want %s for user %d", i, c, pending[i].Code, fastUser)
		}
	}
	cs, _, err := e.svc.ListUserCoupons(t.Context(), fastUser, participant.CouponFilter{}, participant.Page{})
	if err != nil || len(cs) != 4 {
		t.Fatalf("user's coupons after the bind = %d, %v; want 4", len(cs), err)
	}
	// The phone's request IDs still answer, now from the user's coupons.
	c, err := e.svc.ClaimByPhone(t.Context(), participant.PhoneClaimRequest{RequestID: "p1", Phone: fastPhone, TemplateID: tpl.ID})
	if err != nil || c.Code != pending[0].Code || c.UserID != fastUser {
		t.Fatalf("replay after the bind = %+v, %v; want %s for user %d", c, err, pending[0].Code, fastUser)
	}
	_, err = e.svc.Claim(t.Context(), participant.ClaimRequest{RequestID: "u3", UserID: fastUser, TemplateID: tpl.ID})
	wantError(t, "claim past the limit after the bind", err, participant.EREFUSED, participant.ReasonUserLimitReached)

	again, err := e.svc.BindPhone(t.Context(), fastUser, fastPhone)
	if err != nil || len(again) != 0 {
		t.Errorf("repeated bind = %d coupons, %v; want none", len(again), err)
	}
	_, err = e.svc.BindPhone(t.Context(), 8, fastPhone)
	wantError(t, "bind to another user", err, participant.EREFUSED, participant.ReasonPhoneBoundToOtherUser)
	_, err = e.svc.BindPhone(t.Context(), 8, "12345")
	wantError(t, "bind a malformed phone", err, participant.EINVALID, participant.ReasonInvalidArgument)
}

// TestFastUnfinishedBindFinishedByRead: a bind that stopped after marking
// the phone's coupons (its intent left behind) is finished by the user's
// next read, which then shows the coupons.
func TestFastUnfinishedBindFinishedByRead(t *testing.T) {
	e := newFast(t)
	tpl := e.template(nil)
	c, err := e.svc.ClaimByPhone(t.Context(), participant.PhoneClaimRequest{RequestID: "p1", Phone: fastPhone, TemplateID: tpl.ID})
	if err != nil {
		t.Fatal(err)
	}
	p, err := participant.ParsePhone(fastPhone)
	if err != nil {
		t.Fatal(err)
	}
	// Steps 0 and 1 of the move, then a crash.
	if err := e.ports.Phones.AddBindIntent(t.Context(), fastUser, p); err != nil {
		t.Fatal(err)
	}
	if err := e.ports.Phones.MarkBind(t.Context(), fastUser, p); err != nil {
		t.Fatal(err)
	}
	cs, _, err := e.svc.ListUserCoupons(t.Context(), fastUser, participant.CouponFilter{}, participant.Page{})
	if err != nil || len(cs) != 1 || cs[0].Code != c.Code {
		t.Fatalf("read after the crash = %v, %v; want the moved coupon %s", cs, err, c.Code)
	}
	if intents, err := e.ports.Phones.BindIntents(t.Context(), fastUser); err != nil || len(intents) != 0 {
		t.Errorf("bind intents after the read = %v, %v; want none", intents, err)
	}
	if _, err := e.ports.Phones.PendingByRequest(t.Context(), p, "p1"); participant.ErrorCode(err) != participant.ENOTFOUND {
		t.Errorf("pending coupon after the move: %v, want it gone", err)
	}
}
