package console

import (
	"context"
	"net/http"
	"strings"

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
	http.SetCookie(w, cookie(r, signinCookie, tok, 1800))
	c.render(w, r, nil, "signin", view{Title: "Sign in", CSRF: tok, Problem: p, Data: signinData{AuthOff: c.d.Identities == nil, Name: name}})
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
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
			c.signinForm(w, r, name, &problem{Words: words["UNAUTHENTICATED"], Reason: "UNAUTHENTICATED", Message: err.Error(), HTTP: http.StatusUnauthorized})
			return
		}
	} else if identity == "" {
		c.signinForm(w, r, name, invalid("name", "is required while the service runs with authentication off"))
		return
	}
	// The service decides whether this token may run the admin API.
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	if _, err := c.d.Admin.ListCampaigns(actx, &couponv1.ListCampaignsRequest{PageSize: 1}); err != nil {
		c.signinForm(w, r, name, describe(err))
		return
	}
	ss := c.sessions.create(token, identity)
	http.SetCookie(w, cookie(r, signinCookie, "", -1))
	http.SetCookie(w, cookie(r, sessionCookie, ss.id, int(c.cfg.SessionTTL.Seconds())))
	c.d.Log.InfoContext(r.Context(), "console sign-in", "identity", identity)
	http.Redirect(w, r, "/console/campaigns", http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, ss *session) {
	c.sessions.delete(ss.id)
	http.SetCookie(w, cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
}
