package console_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/coupontest"
)

// browser is an HTTP client connecting from a loopback address of its own
// (Linux routes all of 127/8 to lo), so the listener sees its own peer, and
// sending header on every request (a proxy's X-Forwarded-*).
type browser struct {
	t      *testing.T
	cl     *http.Client
	base   string
	header http.Header
}

func newBrowser(t *testing.T, base, ip string, header ...string) *browser {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, base: base, header: http.Header{}, cl: &http.Client{
		Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{DialContext: d.DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	for i := 0; i+1 < len(header); i += 2 {
		b.header.Set(header[i], header[i+1])
	}
	return b
}

func (b *browser) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.cl.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	return resp, string(page)
}

// signin loads the sign-in form and posts token with its CSRF token.
func (b *browser) signin(token string) (*http.Response, string) {
	b.t.Helper()
	_, page := b.do("GET", "/console/signin", nil)
	return b.do("POST", "/console/signin", url.Values{"csrf": {csrfOf(b.t, page)}, "token": {token}})
}

func cookieNamed(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// startHTTP serves the service's HTTP listener (JSON API and console) with
// the given console configuration.
func startHTTP(t *testing.T, cfg console.Config, opts ...coupontest.Option) (base string, srv *coupontest.Server) {
	t.Helper()
	opts = append(opts, func(c *app.Config) {
		c.HTTP.Addr = "127.0.0.1:0"
		c.HTTP.Console = cfg
	})
	srv = coupontest.Start(t, opts...)
	web, err := srv.App.StartHTTP(context.Background(), srv.Addr)
	if err != nil {
		t.Fatalf("start http: %v", err)
	}
	t.Cleanup(func() { _ = web.Close() })
	return "http://" + web.Addr(), srv
}

// TestCookieSecureBehindTrustedProxy: the console's cookies are Secure
// whenever the browser's connection is HTTPS — over TLS to the listener, or
// to a trusted proxy that says so in X-Forwarded-Proto — and when forced
// on; an untrusted peer's X-Forwarded-Proto changes nothing.
func TestCookieSecureBehindTrustedProxy(t *testing.T) {
	const proxy = "127.0.0.2"
	base, _ := startHTTP(t, console.Config{TrustedProxies: []string{proxy + "/32"}})
	for _, c := range []struct {
		name   string
		ip     string
		header []string
		secure bool
	}{
		{"plain HTTP, no proxy", "127.0.0.3", nil, false},
		{"untrusted peer claiming https", "127.0.0.3", []string{"X-Forwarded-Proto", "https"}, false},
		{"trusted proxy, https", proxy, []string{"X-Forwarded-Proto", "https", "X-Forwarded-For", "203.0.113.7"}, true},
		{"trusted proxy, appended hops", proxy, []string{"X-Forwarded-Proto", "https, http"}, true},
		{"trusted proxy, http", proxy, []string{"X-Forwarded-Proto", "http"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBrowser(t, base, c.ip, c.header...)
			resp, _ := b.do("GET", "/console/signin", nil)
			if ck := cookieNamed(resp, "coupon_console_signin"); ck == nil || ck.Secure != c.secure {
				t.Fatalf("sign-in form cookie = %+v, want Secure=%v", ck, c.secure)
			}
			resp, page := b.signin(coupontest.TokenAlice)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("sign-in: http %d, want 303\n%s", resp.StatusCode, page)
			}
			if ck := cookieNamed(resp, "coupon_console"); ck == nil || ck.Secure != c.secure || !ck.HttpOnly {
				t.Fatalf("session cookie = %+v, want HttpOnly, Secure=%v", ck, c.secure)
			}
		})
	}

	t.Run("forced on", func(t *testing.T) {
		base, _ := startHTTP(t, console.Config{SecureCookies: true})
		b := newBrowser(t, base, "127.0.0.3")
		resp, _ := b.do("GET", "/console/signin", nil)
		if ck := cookieNamed(resp, "coupon_console_signin"); ck == nil || !ck.Secure {
			t.Fatalf("sign-in form cookie over plain HTTP with secure_cookies = %+v, want Secure", ck)
		}
	})

	t.Run("direct TLS", func(t *testing.T) {
		srv := coupontest.Start(t)
		c, err := console.New(console.Config{}, console.Deps{Admin: srv.Admin, Coupons: srv.Coupons})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewTLSServer(c)
		t.Cleanup(ts.Close)
		resp, err := ts.Client().Get(ts.URL + "/console/signin")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ck := cookieNamed(resp, "coupon_console_signin"); ck == nil || !ck.Secure {
			t.Fatalf("sign-in form cookie over TLS = %+v, want Secure", ck)
		}
	})
}

// TestConsoleSigninThrottled: after three failed sign-ins within the window
// one client address gets 429 with Retry-After, for the right token too,
// until the window passes; the address is the real client's (through a
// trusted proxy's X-Forwarded-For, never an untrusted peer's), so other
// clients — behind the same proxy or not — still sign in. Failures and
// throttled attempts are counted under surface console.
func TestConsoleSigninThrottled(t *testing.T) {
	const proxy = "127.0.0.2"
	var skew atomic.Int64 // how far the service's clock is ahead
	base, srv := startHTTP(t, console.Config{TrustedProxies: []string{proxy}, SigninFailures: 3, SigninWindow: time.Minute},
		func(c *app.Config) {
			c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		})

	throttled := func(b *browser, token, who string) {
		t.Helper()
		resp, page := b.signin(token)
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(page, `data-reason="RATE_LIMITED"`) {
			t.Fatalf("%s: http %d, want 429 RATE_LIMITED\n%s", who, resp.StatusCode, page)
		}
		secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || secs <= 0 || secs > 60 {
			t.Fatalf("%s: Retry-After %q, want 1..60 seconds", who, resp.Header.Get("Retry-After"))
		}
		if cookieNamed(resp, "coupon_console") != nil {
			t.Fatalf("%s: a session cookie came with the 429", who)
		}
	}
	fail := func(b *browser, who string) {
		t.Helper()
		if resp, page := b.signin("wrong-token"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: http %d, want 401\n%s", who, resp.StatusCode, page)
		}
	}
	signedIn := func(b *browser, who string) {
		t.Helper()
		resp, page := b.signin(coupontest.TokenAlice)
		if resp.StatusCode != http.StatusSeeOther || cookieNamed(resp, "coupon_console") == nil {
			t.Fatalf("%s: http %d, want 303 with a session\n%s", who, resp.StatusCode, page)
		}
	}

	direct := newBrowser(t, base, "127.0.0.3")
	for i := range 3 {
		fail(direct, "wrong token "+strconv.Itoa(i+1))
	}
	throttled(direct, "wrong-token", "fourth wrong token")
	throttled(direct, coupontest.TokenAlice, "right token within the window")
	// An untrusted peer's X-Forwarded-For does not make it someone else.
	throttled(newBrowser(t, base, "127.0.0.3", "X-Forwarded-For", "198.51.100.9"), coupontest.TokenAlice, "throttled peer claiming another address")

	// Behind the trusted proxy each client has its own count, and the
	// proxy's own address is not throttled for them.
	viaProxy := func(client string) *browser { return newBrowser(t, base, proxy, "X-Forwarded-For", client) }
	for i := range 3 {
		fail(viaProxy("203.0.113.5"), "client behind the proxy, wrong token "+strconv.Itoa(i+1))
	}
	throttled(viaProxy("203.0.113.5"), coupontest.TokenAlice, "client behind the proxy after its failures")
	// A client cannot hide behind an address it writes itself: the
	// right-most address the proxy did not vouch for counts.
	throttled(viaProxy("10.0.0.1, 203.0.113.5"), coupontest.TokenAlice, "client prepending an address")
	signedIn(viaProxy("203.0.113.6"), "another client behind the proxy")

	s := samples(srv.Metrics(t))
	if got := s[`coupon_auth_failures_total{surface="console"}`]; got != 6 {
		t.Errorf(`coupon_auth_failures_total{surface="console"} = %v, want 6`, got)
	}
	if got := s[`coupon_auth_throttled_total{surface="console"}`]; got != 5 {
		t.Errorf(`coupon_auth_throttled_total{surface="console"} = %v, want 5`, got)
	}

	skew.Store(int64(time.Minute + time.Second))
	signedIn(direct, "right token after the window")
	// A good sign-in clears the address's failures: two more are not
	// enough to throttle it again.
	again := newBrowser(t, base, "127.0.0.3")
	fail(again, "wrong token after signing in")
	fail(again, "second wrong token after signing in")
	signedIn(again, "right token after two new failures")
}

// samples parses a /metrics page into series → value.
func samples(page string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(page, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
