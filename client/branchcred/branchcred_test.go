package branchcred_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/client/branchcred"
)

func TestSignVerify(t *testing.T) {
	now := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	old := branchcred.Key{ID: "k-old", Secret: strings.Repeat("o", branchcred.MinSecret)}
	cur := branchcred.Key{ID: "k-new", Secret: strings.Repeat("n", branchcred.MinSecret)}
	// During a rotation the verifier knows both keys.
	both := func(id string) (string, bool) {
		for _, k := range []branchcred.Key{cur, old} {
			if k.ID == id {
				return k.Secret, true
			}
		}
		return "", false
	}
	order := branchcred.Order{CouponCode: "C1", OrderNo: "o-1"}
	for _, k := range []branchcred.Key{old, cur} {
		v, err := branchcred.Sign(k, "shop", "g-1", now.Add(time.Hour), order)
		if err != nil {
			t.Fatal(err)
		}
		c, err := branchcred.Verify(v, both, now)
		if err != nil {
			t.Fatalf("signed with %s: %v", k.ID, err)
		}
		if c.Caller != "shop" || c.GID != "g-1" || !c.Covers("C1", "o-1") || c.Covers("C1", "o-2") || c.KeyID != k.ID {
			t.Errorf("claims %+v", c)
		}
		if _, err := branchcred.Verify(v, both, now.Add(time.Hour)); !errors.Is(err, branchcred.ErrExpired) {
			t.Errorf("at expiry: %v, want ErrExpired", err)
		}
	}
	v, _ := branchcred.Sign(old, "shop", "g-1", now.Add(time.Hour), order)
	onlyNew := func(id string) (string, bool) { return cur.Secret, id == cur.ID }
	if _, err := branchcred.Verify(v, onlyNew, now); !errors.Is(err, branchcred.ErrUnknownKey) {
		t.Errorf("old key removed: %v, want ErrUnknownKey", err)
	}
	// The key id names the key; a secret swapped under it fails.
	swapped := func(id string) (string, bool) { return cur.Secret, id == old.ID }
	if _, err := branchcred.Verify(v, swapped, now); !errors.Is(err, branchcred.ErrSignature) {
		t.Errorf("another secret: %v, want ErrSignature", err)
	}
	for _, bad := range []string{"", "v1", "v1.x", "v2." + strings.SplitN(v, ".", 2)[1], "Bearer local-shop"} {
		if _, err := branchcred.Verify(bad, both, now); !errors.Is(err, branchcred.ErrMalformed) {
			t.Errorf("Verify(%q) = %v, want ErrMalformed", bad, err)
		}
	}
	if _, err := branchcred.Sign(cur, "shop", "g-1", now); err == nil {
		t.Error("signed a credential naming no coupon")
	}
	if _, err := branchcred.Sign(branchcred.Key{ID: "k", Secret: "short"}, "shop", "g-1", now, order); err == nil {
		t.Error("signed with a short secret")
	}
}
