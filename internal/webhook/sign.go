package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	// HeaderSignature carries "t=<unix seconds>,v1=<hex HMAC-SHA256>".
	HeaderSignature = "Coupon-Signature"
	// HeaderEventID is the event's id, stable across retries: receivers
	// deduplicate by it.
	HeaderEventID   = "Coupon-Event-Id"
	HeaderEventType = "Coupon-Event-Type"
)

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify; it wraps one of them.
var (
	// ErrSignatureHeader: the header is missing or malformed.
	ErrSignatureHeader = errors.New("malformed webhook signature header")
	// ErrSignatureTimestamp: the timestamp is outside the tolerance, so the
	// request may be a replay.
	ErrSignatureTimestamp = errors.New("webhook signature timestamp outside tolerance")
	// ErrSignatureMismatch: no v1 signature matches the body and secret.
	ErrSignatureMismatch = errors.New("webhook signature mismatch")
)

// Sign returns the Coupon-Signature header value for body sent at t:
// "t=<unix seconds>,v1=<hex of HMAC-SHA256 keyed with the secret, over
// "<t>.<body>">". The key is the secret string as issued, "whsec_" prefix
// included. Signing the timestamp with the body lets receivers refuse
// replays of an old request.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a Coupon-Signature header against the raw request body: the
// timestamp must be within tolerance of now (DefaultTolerance when tolerance
// is not positive) and one of the v1 signatures must match. Several v1
// entries are accepted so that a sender may sign with an old and a new
// secret while they are rotated; unknown schemes are ignored. Pass the body
// exactly as received, before any JSON decoding.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%w: %q is not key=value", ErrSignatureHeader, part)
		}
		switch k {
		case "t":
			if ts != "" {
				return fmt.Errorf("%w: two timestamps", ErrSignatureHeader)
			}
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return fmt.Errorf("%w: v1 is not a hex SHA-256 HMAC", ErrSignatureHeader)
			}
			sigs = append(sigs, sig)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return fmt.Errorf("%w: want t= and v1=", ErrSignatureHeader)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrSignatureHeader, ts)
	}
	switch d := now.Sub(time.Unix(sec, 0)); {
	case d > tolerance:
		return fmt.Errorf("%w: signed %s ago", ErrSignatureTimestamp, d.Round(time.Second))
	case d < -tolerance:
		return fmt.Errorf("%w: signed %s ahead of this clock", ErrSignatureTimestamp, (-d).Round(time.Second))
	}
	want := mac(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}
