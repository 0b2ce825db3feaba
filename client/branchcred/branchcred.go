// Package branchcred signs and verifies branch credentials: what an order
// service puts in a DTM global transaction's branch headers instead of its
// own bearer token. DTM stores branch headers with the transaction and shows
// them to whoever reaches its HTTP API, so a credential there must be
// useless beyond the calls DTM itself makes for that transaction: it names
// the calling service, the gid, the coupons and orders of the transaction
// and an expiry, under an HMAC-SHA256 with a key the order service and the
// coupon service share. The coupon service accepts it only with DTM's
// matching dtm-gid metadata, only for the methods DTM calls (never the Try,
// which the order service makes with its own token) and only for the
// coupons and orders it names.
//
// It links only the standard library, so an order service can take it
// without the rest of the coupon service.
package branchcred

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Header is the gRPC metadata key of a branch credential. It is not
// "authorization": the order service's own Try carries its bearer token
// there, and DTM appends the branch headers to the same call.
const Header = "coupon-branch-credential"

// version prefixes every credential; a new format takes a new prefix.
const version = "v1"

// MinSecret is the shortest secret accepted, in bytes.
const MinSecret = 32

// DefaultTTL is how long a credential is good for unless the signer says
// otherwise. DTM retries a Confirm, Cancel, compensation or message branch
// until it succeeds, with backoff, for as long as it takes (a coupon
// service down for a weekend, a key misconfigured for days); an expired
// credential turns every later retry into Unauthenticated, which DTM keeps
// retrying without end. 45 days outlasts any outage an operator lets run,
// and is short enough that the store of finished transactions is not a
// stock of live credentials for long.
const DefaultTTL = 45 * 24 * time.Hour

// Key is one shared signing key. The order service signs with its first
// key; the coupon service verifies with any configured key of that caller,
// so a key is rotated by adding the new one on the coupon service, then
// putting it first on the order service, then, once the transactions signed
// with the old one are finished, removing the old one.
type Key struct {
	// ID names the key in every credential it signs; it is not secret.
	ID string `mapstructure:"id" json:"id"`
	// Secret is at least MinSecret bytes.
	Secret string `mapstructure:"secret" json:"secret"`
}

// Check reports a key that cannot sign or verify.
func (k Key) Check() error {
	if k.ID == "" || strings.ContainsAny(k.ID, " \t\r\n") {
		return errors.New("branch key: id is required and has no spaces")
	}
	if len(k.Secret) < MinSecret {
		return fmt.Errorf("branch key %s: secret is shorter than %d bytes", k.ID, MinSecret)
	}
	return nil
}

// Order is one coupon of the transaction and the order it is used for.
type Order struct {
	CouponCode string `json:"coupon"`
	OrderNo    string `json:"order"`
}

// Claims is what a credential says.
type Claims struct {
	KeyID   string    `json:"kid"`
	Caller  string    `json:"caller"`
	GID     string    `json:"gid"`
	Orders  []Order   `json:"orders"`
	Expires time.Time `json:"-"`
	Exp     int64     `json:"exp"` // Expires in Unix seconds, as signed
}

// Covers reports whether the claims name the coupon for the order.
func (c Claims) Covers(code, orderNo string) bool {
	for _, o := range c.Orders {
		if o.CouponCode == code && o.OrderNo == orderNo {
			return true
		}
	}
	return false
}

// Sign returns the credential of caller for the transaction gid and the
// coupons in orders, good until expires, signed with key.
func Sign(key Key, caller, gid string, expires time.Time, orders ...Order) (string, error) {
	if err := key.Check(); err != nil {
		return "", err
	}
	if caller == "" || gid == "" {
		return "", errors.New("branch credential: caller and gid are required")
	}
	if len(orders) == 0 {
		return "", errors.New("branch credential: name at least one coupon and its order")
	}
	for _, o := range orders {
		if o.CouponCode == "" || o.OrderNo == "" {
			return "", errors.New("branch credential: every coupon needs its code and order number")
		}
	}
	payload, err := json.Marshal(Claims{KeyID: key.ID, Caller: caller, GID: gid, Orders: orders, Exp: expires.Unix()})
	if err != nil {
		return "", fmt.Errorf("branch credential: %w", err)
	}
	p := base64.RawURLEncoding.EncodeToString(payload)
	return version + "." + p + "." + base64.RawURLEncoding.EncodeToString(mac(key.Secret, p)), nil
}

// mac is the HMAC-SHA256 over the version and the encoded payload.
func mac(secret, payload string) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(Header + " " + version + "." + payload))
	return h.Sum(nil)
}

// Verification failures; Verify wraps one of them.
var (
	ErrMalformed  = errors.New("malformed branch credential")
	ErrUnknownKey = errors.New("branch credential signed with an unknown key")
	ErrSignature  = errors.New("branch credential signature does not match")
	ErrExpired    = errors.New("branch credential expired")
)

// Verify checks value's signature with the key it names (lookup returns
// the secret of a key id, or false) and its expiry against now, and
// returns its claims. It checks neither the gid nor the coupons: the
// caller compares them with the call.
func Verify(value string, lookup func(keyID string) (secret string, ok bool), now time.Time) (Claims, error) {
	c, p, sig, err := decode(value)
	if err != nil {
		return Claims{}, err
	}
	secret, ok := lookup(c.KeyID)
	if !ok {
		return Claims{}, fmt.Errorf("%w %q", ErrUnknownKey, c.KeyID)
	}
	if !hmac.Equal(sig, mac(secret, p)) {
		return Claims{}, ErrSignature
	}
	if !now.Before(c.Expires) {
		return Claims{}, fmt.Errorf("%w at %s", ErrExpired, c.Expires.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// Peek returns what value claims without checking its signature or expiry:
// for the signer's own checks (coupontcc.Enlist), never to trust a caller.
func Peek(value string) (Claims, error) {
	c, _, _, err := decode(value)
	return c, err
}

func decode(value string) (c Claims, payload string, sig []byte, err error) {
	ver, rest, ok := strings.Cut(strings.TrimSpace(value), ".")
	if !ok || ver != version {
		return Claims{}, "", nil, fmt.Errorf("%w: want %s.PAYLOAD.SIGNATURE", ErrMalformed, version)
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok {
		return Claims{}, "", nil, fmt.Errorf("%w: no signature", ErrMalformed)
	}
	raw, err1 := base64.RawURLEncoding.DecodeString(p)
	sig, err2 := base64.RawURLEncoding.DecodeString(s)
	if err1 != nil || err2 != nil || json.Unmarshal(raw, &c) != nil {
		return Claims{}, "", nil, fmt.Errorf("%w: bad encoding", ErrMalformed)
	}
	if c.Caller == "" || c.GID == "" || len(c.Orders) == 0 {
		return Claims{}, "", nil, fmt.Errorf("%w: caller, gid and coupons are required", ErrMalformed)
	}
	c.Expires = time.Unix(c.Exp, 0)
	return c, p, sig, nil
}
