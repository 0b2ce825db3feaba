package console

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

type signinData struct {
	// AuthOff: the service checks no token, so the operator names themself.
	AuthOff bool
	Name    string
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	if c.sessions.get(r) != nil {
		http.Redirect(w, r, "/console/campaigns", http.StatusSeeOther)
		return
	}
	c.signinForm(w, r, "", nil)
}

// signinForm shows the sign-in form with a fresh double-submit CSRF token.
func (c *Console) signinForm(w http.ResponseWriter, r *http.Request, name string, p *problem) {
	tok := randomToken()
	http.SetCookie(w, c.cookie(r, signinCookie, tok, 1800))
	c.render(w, r, nil, "signin", view{Title: "Sign in", CSRF: tok, Problem: p, Data: signinData{AuthOff: c.d.Identities == nil, Name: name}})
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	client := c.proxies.ClientIP(r)
	if c.throttle != nil {
		if wait := c.throttle.wait(client); wait > 0 {
			c.throttled(w, r, client, wait)
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	ck, err := r.Cookie(signinCookie)
	if err != nil || !sameToken(r.PostFormValue(csrfField), ck.Value) {
		http.Error(w, "the sign-in form is stale or came from another site: reload it and sign in again", http.StatusForbidden)
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	token = strings.TrimSpace(strings.TrimPrefix(token, "Bearer "))
	name := strings.TrimSpace(r.PostFormValue("name"))
	if token == "" {
		c.signinForm(w, r, name, invalid("token", "is required"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	identity := name
	if c.d.Identities != nil {
		if identity, err = c.d.Identities.Identify(ctx, token); err != nil {
			c.failed(w, r, client, name, &problem{Words: words["UNAUTHENTICATED"], Reason: "UNAUTHENTICATED", Message: err.Error(), HTTP: http.StatusUnauthorized})
			return
		}
	} else if identity == "" {
		c.signinForm(w, r, name, invalid("name", "is required while the service runs with authentication off"))
		return
	}
	// The service decides whether this token may run the admin API.
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	if _, err := c.d.Admin.ListCampaigns(actx, &couponv1.ListCampaignsRequest{PageSize: 1}); err != nil {
		p := describe(err)
		if p.Reason == "UNAUTHENTICATED" || p.Reason == "PERMISSION_DENIED" {
			c.failed(w, r, client, name, p)
			return
		}
		c.signinForm(w, r, name, p)
		return
	}
	if c.throttle != nil {
		c.throttle.reset(client)
	}
	ss := c.sessions.create(token, identity)
	http.SetCookie(w, c.cookie(r, signinCookie, "", -1))
	http.SetCookie(w, c.cookie(r, sessionCookie, ss.id, int(c.cfg.SessionTTL.Seconds())))
	c.d.Log.InfoContext(r.Context(), "console sign-in", "identity", identity)
	http.Redirect(w, r, "/console/campaigns", http.StatusSeeOther)
}

// failed answers a sign-in the service refused, and counts it against the
// client's address. The log names the client and the reason, never the
// token.
func (c *Console) failed(w http.ResponseWriter, r *http.Request, client, name string, p *problem) {
	if c.d.Events != nil {
		c.d.Events.AuthFailed(surface)
	}
	c.d.Log.WarnContext(r.Context(), "console sign-in failed", "client", client, "reason", p.Reason, "err", p.Message)
	if c.throttle != nil && c.throttle.fail(client) {
		c.d.Log.WarnContext(r.Context(), "console sign-in throttled: too many failures from one address",
			"client", client, "failures", c.throttle.max, "window", c.throttle.window)
	}
	c.signinForm(w, r, name, p)
}

// throttled refuses a sign-in from a client still waiting out its failures,
// without looking at the token.
func (c *Console) throttled(w http.ResponseWriter, r *http.Request, client string, wait time.Duration) {
	if c.d.Events != nil {
		c.d.Events.AuthThrottled(surface)
	}
	secs := int64((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	c.signinForm(w, r, "", &problem{
		Words: "Too many failed sign-ins from your address: wait, then sign in again.", Reason: "RATE_LIMITED",
		Message: fmt.Sprintf("too many failed sign-ins from %s; retry after %ds", client, secs), HTTP: http.StatusTooManyRequests,
	})
}

// surface labels the console's sign-ins in the authentication metrics.
const surface = "console"

func (c *Console) signout(w http.ResponseWriter, r *http.Request, ss *session) {
	c.sessions.delete(ss.id)
	http.SetCookie(w, c.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
}
