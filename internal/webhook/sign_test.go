package webhook_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/webhook"
)

func TestSignVerify(t *testing.T) {
	const secret = "whsec_test-secret"
	body := []byte(`{"id":"C1.1","type":"coupon.claimed"}`)
	at := time.Unix(1_800_000_000, 0)
	good := webhook.Sign(secret, at, body)
	other := webhook.Sign("whsec_other", at, body)
	v1 := func(h string) string { _, v, _ := strings.Cut(h, ",v1="); return v }
	tests := []struct {
		name      string
		secret    string
		header    string
		body      []byte
		now       time.Time
		tolerance time.Duration
		want      error
	}{
		{"valid", secret, good, body, at, 0, nil},
		{"valid within tolerance after", secret, good, body, at.Add(4 * time.Minute), 0, nil},
		{"valid within tolerance before", secret, good, body, at.Add(-4 * time.Minute), 0, nil},
		{"spaces after commas", secret, strings.ReplaceAll(good, ",", ", "), body, at, 0, nil},
		{"rotation: second v1 matches", secret, other + ",v1=" + v1(good), body, at, 0, nil},
		{"unknown scheme ignored", secret, good + ",v0=abc", body, at, 0, nil},
		{"tampered body", secret, good, []byte(`{"id":"C1.1","type":"coupon.used"}`), at, 0, webhook.ErrSignatureMismatch},
		{"body with trailing newline", secret, good, append(append([]byte{}, body...), '\n'), at, 0, webhook.ErrSignatureMismatch},
		{"wrong secret", "whsec_wrong", good, body, at, 0, webhook.ErrSignatureMismatch},
		{"other secret's signature", secret, other, body, at, 0, webhook.ErrSignatureMismatch},
		{"too old", secret, good, body, at.Add(6 * time.Minute), 0, webhook.ErrSignatureTimestamp},
		{"from the future", secret, good, body, at.Add(-6 * time.Minute), 0, webhook.ErrSignatureTimestamp},
		{"custom tolerance", secret, good, body, at.Add(2 * time.Second), time.Second, webhook.ErrSignatureTimestamp},
		{"timestamp changed", secret, strings.Replace(good, "t=1800000000", "t=1800000001", 1), body, at, 0, webhook.ErrSignatureMismatch},
		{"empty header", secret, "", body, at, 0, webhook.ErrSignatureHeader},
		{"no v1", secret, "t=1800000000", body, at, 0, webhook.ErrSignatureHeader},
		{"no t", secret, "v1=" + v1(good), body, at, 0, webhook.ErrSignatureHeader},
		{"two t", secret, "t=1800000000," + good, body, at, 0, webhook.ErrSignatureHeader},
		{"t not a number", secret, "t=soon,v1=" + v1(good), body, at, 0, webhook.ErrSignatureHeader},
		{"v1 not hex", secret, "t=1800000000,v1=zz", body, at, 0, webhook.ErrSignatureHeader},
		{"v1 too short", secret, "t=1800000000,v1=" + v1(good)[:62], body, at, 0, webhook.ErrSignatureHeader},
		{"not key=value", secret, good + ",junk", body, at, 0, webhook.ErrSignatureHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := webhook.Verify(tt.secret, tt.header, tt.body, tt.now, tt.tolerance)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Verify(%q) = %v; want %v", tt.header, err, tt.want)
			}
		})
	}
}

// TestSignKnownAnswer pins the scheme to a value computed outside Go:
// printf %s '1700000000.{}' | openssl dgst -sha256 -hmac whsec_k
func TestSignKnownAnswer(t *testing.T) {
	got := webhook.Sign("whsec_k", time.Unix(1700000000, 0), []byte("{}"))
	const want = "t=1700000000,v1=8b20524faff2b12e1089e404a8cf60fbe577e5320e899ebff7329ebbcb9ada22"
	if got != want {
		t.Errorf("Sign = %q; want %q", got, want)
	}
}
