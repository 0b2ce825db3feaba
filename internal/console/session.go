package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// Cookie names. The session cookie holds only a random id; the token stays
// in the server's memory.
const (
	sessionCookie = "coupon_console"
	// signinCookie carries the sign-in form's CSRF token before a session
	// exists (double submit).
	signinCookie = "coupon_console_signin"
	csrfField    = "csrf"
	csrfHeader   = "X-CSRF-Token"
)

// session is one signed-in operator.
type session struct {
	id       string
	token    string
	identity string
	csrf     string
	expires  time.Time
	// flash is shown once on the next page, e.g. after a redirect.
	flash string
	// created is the webhook endpoint just created, with its secret, shown
	// once on the next webhooks page.
	created *createdEndpoint
}

// sessions keeps the signed-in operators in memory: a restart signs
// everyone out, and behind a load balancer the console needs sticky
// sessions (or one replica serving it).
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	now func() time.Time
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *sessions) create(token, identity string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, x := range s.m {
		if now.After(x.expires) {
			delete(s.m, id)
		}
	}
	ss := &session{id: randomToken(), token: token, identity: identity, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.m[ss.id] = ss
	return ss
}

// get returns the live session the request's cookie names, or nil.
func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[c.Value]
	if ss == nil {
		return nil
	}
	if s.now().After(ss.expires) {
		delete(s.m, ss.id)
		return nil
	}
	return ss
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

func (s *sessions) setFlash(ss *session, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.flash = msg
}

func (s *sessions) takeFlash(ss *session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := ss.flash
	ss.flash = ""
	return f
}

func (s *sessions) setCreated(ss *session, e *createdEndpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.created = e
}

func (s *sessions) takeCreated(ss *session) *createdEndpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := ss.created
	ss.created = nil
	return e
}

// cookie builds a console cookie: HttpOnly, SameSite=Strict, scoped to the
// console, Secure when the browser's connection is HTTPS (over TLS to this
// listener, or to a trusted proxy that says so) or when configured always.
func (c *Console) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: "/console/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.cfg.SecureCookies || c.proxies.HTTPS(r),
	}
}

// sameToken compares CSRF tokens in constant time.
func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// csrfOK checks the form field or header of a state-changing request
// against the session's token.
func csrfOK(r *http.Request, ss *session) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return sameToken(got, ss.csrf)
}
