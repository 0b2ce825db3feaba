package webhook_test

import (
	"fmt"
	"time"

	"github.com/opencoupon/coupon/internal/webhook"
)

// A receiver checks every request before trusting it: the secret is the
// one CreateEndpoint returned, the body the raw request body, and the
// header Coupon-Signature. In an http.Handler:
//
//	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
//	...
//	if err := webhook.Verify(secret, r.Header.Get("Coupon-Signature"), body, time.Now(), 5*time.Minute); err != nil {
//		http.Error(w, "bad signature", http.StatusBadRequest)
//		return
//	}
//	// Deduplicate by r.Header.Get("Coupon-Event-Id"), then answer 2xx.
func ExampleVerify() {
	secret := "whsec_L2d9yzbJm5Nw0K4cYq3pWf8eZr6uVx1A7tHs-oEi_Dg"
	body := []byte(`{"id":"C7QK2.1","type":"coupon.claimed","schema_version":1}`)
	sentAt := time.Unix(1_800_000_000, 0)
	header := webhook.Sign(secret, sentAt, body) // what the dispatcher sends

	received := sentAt.Add(2 * time.Second)
	fmt.Println(webhook.Verify(secret, header, body, received, 5*time.Minute))
	fmt.Println(webhook.Verify(secret, header, []byte(`{"id":"forged"}`), received, 5*time.Minute))
	fmt.Println(webhook.Verify(secret, header, body, sentAt.Add(time.Hour), 5*time.Minute))
	// Output:
	// <nil>
	// webhook signature mismatch
	// webhook signature timestamp outside tolerance: signed 1h0m0s ago
}
