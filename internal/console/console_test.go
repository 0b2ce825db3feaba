package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/coupontest"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// startConsole serves a console over a real service with authentication
// off (no Identities), as today's service runs.
func startConsole(t *testing.T) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := coupontest.Start(t)
	c, err := console.New(console.Config{}, console.Deps{Admin: srv.Admin, Coupons: srv.Coupons})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c)
	t.Cleanup(ts.Close)
	jar, _ := cookiejar.New(nil)
	return ts, &http.Client{Jar: jar}
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func get(t *testing.T, cl *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := cl.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func post(t *testing.T, cl *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := cl.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}

func TestSignInWithAuthenticationOff(t *testing.T) {
	ts, cl := startConsole(t)

	resp, page := get(t, cl, ts.URL+"/console/campaigns")
	if resp.Request.URL.Path != "/console/signin" {
		t.Fatalf("an anonymous visit lands on %s, want /console/signin", resp.Request.URL.Path)
	}
	for h, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("Content-Security-Policy = %q, want scripts from the console only", resp.Header.Get("Content-Security-Policy"))
	}
	if !strings.Contains(page, `name="name"`) {
		t.Error("with authentication off the sign-in form does not ask for a name")
	}
	tok := csrfOf(t, page)

	// A sign-in without the form's CSRF token is refused.
	if resp, _ := post(t, cl, ts.URL+"/console/signin", url.Values{"token": {"local-admin-alice"}, "name": {"alice"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without the CSRF token: http %d, want 403", resp.StatusCode)
	}
	// Without a name the console cannot tell who is signing in.
	if resp, page := post(t, cl, ts.URL+"/console/signin", url.Values{"csrf": {tok}, "token": {"local-admin-alice"}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, `data-reason="INVALID_ARGUMENT"`) {
		t.Errorf("sign-in without a name: http %d, want 400 with INVALID_ARGUMENT", resp.StatusCode)
	} else {
		tok = csrfOf(t, page)
	}

	noRedirect := *cl
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, _ = post(t, &noRedirect, ts.URL+"/console/signin", url.Values{"csrf": {tok}, "token": {"Bearer local-admin-alice"}, "name": {"alice"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: http %d, want 303", resp.StatusCode)
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "coupon_console" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/console/" {
		t.Fatalf("session cookie = %+v, want HttpOnly, SameSite=Strict, Path /console/", session)
	}

	resp, page = get(t, cl, ts.URL+"/console/campaigns")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-testid="identity">alice<`) {
		t.Fatalf("after sign-in: http %d, signed-in identity not shown", resp.StatusCode)
	}
	// A state-changing form without the session's CSRF token is refused,
	// and a forged one too.
	for _, form := range []url.Values{{"name": {"x"}}, {"name": {"x"}, "csrf": {"forged"}}} {
		if resp, _ := post(t, cl, ts.URL+"/console/campaigns", form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("create campaign with csrf %q: http %d, want 403", form.Get("csrf"), resp.StatusCode)
		}
	}
	// Signing out ends the session on the server.
	if resp, _ := post(t, cl, ts.URL+"/console/signout", url.Values{"csrf": {csrfOf(t, page)}}); resp.Request.URL.Path != "/console/signin" {
		t.Errorf("sign-out lands on %s, want /console/signin", resp.Request.URL.Path)
	}
	replay := &http.Client{CheckRedirect: noRedirect.CheckRedirect}
	req, _ := http.NewRequest("GET", ts.URL+"/console/campaigns", nil)
	req.AddCookie(session)
	resp, err := replay.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the old session cookie after sign-out: http %d, want a redirect to sign-in", resp.StatusCode)
	}
}

// TestSignInWithAuthenticationOn signs in against a service that checks
// tokens: the console names the caller from the service's configuration and
// lets in only a token the service lets run the admin API. An app token and
// an order service's token are known callers, yet neither may sign in.
func TestSignInWithAuthenticationOn(t *testing.T) {
	srv := coupontest.Start(t)
	ids, err := auth.New(auth.Config{Enabled: true, Callers: auth.DevCallers()}, coupontest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	// A connection with no token of its own: the console sends the one
	// signing in.
	conn := srv.Dial(t)
	c, err := console.New(console.Config{}, console.Deps{Admin: couponv1.NewAdminServiceClient(conn), Coupons: couponv1.NewCouponServiceClient(conn), Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c)
	t.Cleanup(ts.Close)

	signin := func(t *testing.T, token string) (*http.Response, string) {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		cl := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, page := get(t, cl, ts.URL+"/console/signin")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("sign-in page: http %d", resp.StatusCode)
		}
		if strings.Contains(page, `name="name"`) {
			t.Fatal("with authentication on the sign-in form asks for a name")
		}
		return post(t, cl, ts.URL+"/console/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {token}})
	}
	for _, tc := range []struct{ who, token, reason string }{
		{"an app token", coupontest.TokenApp, "PERMISSION_DENIED"},
		{"an order service's token", coupontest.TokenShop, "PERMISSION_DENIED"},
		{"an unknown token", "not-a-token", "UNAUTHENTICATED"},
	} {
		t.Run(tc.who, func(t *testing.T) {
			resp, page := signin(t, tc.token)
			for _, ck := range resp.Cookies() {
				if ck.Name == "coupon_console" && ck.Value != "" {
					t.Fatalf("sign-in with %s set a session cookie", tc.who)
				}
			}
			if resp.StatusCode == http.StatusSeeOther || !strings.Contains(page, `data-reason="`+tc.reason+`"`) {
				t.Fatalf("sign-in with %s: http %d (location %q), want the form again with reason %s", tc.who, resp.StatusCode, resp.Header.Get("Location"), tc.reason)
			}
		})
	}
	t.Run("an admin token", func(t *testing.T) {
		resp, _ := signin(t, coupontest.TokenAlice)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/campaigns" {
			t.Fatalf("sign-in as alice: http %d to %q, want 303 to /console/campaigns", resp.StatusCode, resp.Header.Get("Location"))
		}
		var session bool
		for _, ck := range resp.Cookies() {
			session = session || ck.Name == "coupon_console" && ck.Value != ""
		}
		if !session {
			t.Fatal("sign-in as alice set no session cookie")
		}
	})
}
