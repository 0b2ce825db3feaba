// Package console is the operator console served at /console on the HTTP
// listener: server-rendered pages (html/template, a little htmx, every
// asset embedded) over the service's own gRPC API. Each call carries the
// signed-in operator's bearer token, so what the console may do and why the
// service refuses are the service's own; the console adds words to the
// reasons and never writes around a refusal.
package console

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config is the console's configuration.
type Config struct {
	// DTMHTTPAddr is the coordinator's HTTP host:port, asked for the status
	// of a LOCKED coupon's transaction; empty leaves it out.
	DTMHTTPAddr string
	// SessionTTL is how long a sign-in lasts; 0 means 8h.
	SessionTTL time.Duration
	// TrustedProxies are the reverse proxies in front of the listener (IP
	// addresses or CIDR ranges): only from them do X-Forwarded-For and
	// X-Forwarded-Proto count. Empty: no header is believed.
	TrustedProxies []string
	// SecureCookies marks the cookies Secure on every response. Without
	// it they are Secure whenever the browser's connection is HTTPS,
	// directly or through a trusted proxy.
	SecureCookies bool
	// SigninFailures failed sign-ins from one client address within
	// SigninWindow make it wait until the window passes (429 with
	// Retry-After), whatever token it sends. Zero takes the defaults (5
	// in 15m); a negative SigninFailures turns the throttle off.
	SigninFailures int
	SigninWindow   time.Duration
}

// Deps are the console's collaborators. Admin and Coupons are required.
type Deps struct {
	Admin   couponv1.AdminServiceClient
	Coupons couponv1.CouponServiceClient
	// Identities names the identity of a token. Nil means the service runs
	// with authentication off: sign-in then asks for a name as well.
	Identities Identities
	// Reconcile lists reconcile runs; nil shows that none are configured.
	Reconcile ReconcileRuns
	// Transactions answers DTM transaction status; nil uses DTMHTTPAddr.
	Transactions Transactions
	// Events counts failed and throttled sign-ins; nil counts nothing.
	Events AuthEvents
	Log    *slog.Logger
	Now    func() time.Time
}

// callTimeout bounds each service call a page makes.
const callTimeout = 10 * time.Second

// Console is the console's http.Handler, to mount at /console/.
type Console struct {
	cfg      Config
	d        Deps
	sessions *sessions
	proxies  Proxies
	throttle *throttle // nil: off
	pages    map[string]*template.Template
	handler  http.Handler
}

// New builds the console.
func New(cfg Config, d Deps) (*Console, error) {
	if d.Admin == nil || d.Coupons == nil {
		return nil, fmt.Errorf("console: the admin and coupon service clients are required")
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Transactions == nil && cfg.DTMHTTPAddr != "" {
		d.Transactions = &DTMHTTP{Addr: cfg.DTMHTTPAddr}
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	proxies, err := ParseProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	c := &Console{cfg: cfg, d: d, sessions: newSessions(cfg.SessionTTL, d.Now), proxies: proxies, pages: map[string]*template.Template{}}
	if cfg.SigninFailures >= 0 {
		window := cfg.SigninWindow
		if window <= 0 {
			window = DefaultSigninWindow
		}
		c.throttle = newThrottle(cmp.Or(cfg.SigninFailures, DefaultSigninFailures), window, d.Now)
	}
	if err := c.parse(); err != nil {
		return nil, err
	}
	c.handler = http.NewCrossOriginProtection().Handler(c.routes())
	return c, nil
}

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/console/static/", http.FileServerFS(static))
	mux.HandleFunc("GET /console/static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /console/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/campaigns", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /console/signin", c.signinPage)
	mux.HandleFunc("POST /console/signin", c.signin)
	mux.HandleFunc("POST /console/signout", c.authed(c.signout))

	mux.HandleFunc("GET /console/campaigns", c.authed(c.campaigns))
	mux.HandleFunc("POST /console/campaigns", c.authed(c.createCampaign))
	mux.HandleFunc("GET /console/campaigns/{id}", c.authed(c.campaign))
	mux.HandleFunc("POST /console/campaigns/{id}", c.authed(c.updateCampaign))
	mux.HandleFunc("POST /console/campaigns/{id}/status", c.authed(c.campaignStatus))
	mux.HandleFunc("GET /console/campaigns/{id}/templates/new", c.authed(c.newTemplate))
	mux.HandleFunc("POST /console/campaigns/{id}/templates", c.authed(c.createTemplate))

	mux.HandleFunc("POST /console/check", c.authed(c.checkTemplate))
	mux.HandleFunc("GET /console/templates", c.authed(c.templates))
	mux.HandleFunc("GET /console/templates/{id}", c.authed(c.template))
	mux.HandleFunc("POST /console/templates/{id}", c.authed(c.updateTemplate))
	mux.HandleFunc("POST /console/templates/{id}/approve", c.authed(c.approve))
	mux.HandleFunc("POST /console/templates/{id}/stock", c.authed(c.addStock))
	mux.HandleFunc("POST /console/templates/{id}/status", c.authed(c.templateStatus))

	mux.HandleFunc("GET /console/coupons", c.authed(c.coupons))
	mux.HandleFunc("GET /console/audit", c.authed(c.audit))
	mux.HandleFunc("GET /console/webhooks", c.authed(c.webhooks))
	mux.HandleFunc("POST /console/webhooks", c.authed(c.createWebhook))
	mux.HandleFunc("POST /console/webhooks/{id}/status", c.authed(c.webhookStatus))
	mux.HandleFunc("POST /console/webhooks/{id}/delete", c.authed(c.deleteWebhook))
	mux.HandleFunc("POST /console/webhooks/{id}/redeliver", c.authed(c.redeliverWebhook))
	mux.HandleFunc("GET /console/reconcile", c.authed(c.reconcile))
	mux.HandleFunc("GET /console/reconcile/{date}/report", c.authed(c.reconcileReport))
	return mux
}

// ServeHTTP serves the console with headers that keep its pages from being
// framed, sniffed, cached or made to run anything but its own scripts.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	c.handler.ServeHTTP(w, r)
}

// authed requires a signed-in session, and on a state-changing request a
// CSRF token matching it.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ss := c.sessions.get(r)
		if ss == nil {
			if r.Header.Get("HX-Request") != "" {
				w.Header().Set("HX-Redirect", "/console/signin")
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			if !csrfOK(r, ss) {
				http.Error(w, "the form is stale or came from another site: reload the page and submit it again", http.StatusForbidden)
				return
			}
		}
		h(w, r, ss)
	}
}

// call is the context of a service call made for ss: its token as the
// bearer credential, and a deadline.
func (c *Console) call(r *http.Request, ss *session) (context.Context, context.CancelFunc) {
	ctx := metadata.AppendToOutgoingContext(r.Context(), "authorization", "Bearer "+ss.token)
	return context.WithTimeout(ctx, callTimeout)
}

// view is what every page template gets.
type view struct {
	Title    string
	Nav      string
	Identity string
	CSRF     string
	Flash    string
	Problem  *problem
	Data     any
}

func (c *Console) parse() error {
	funcs := template.FuncMap{
		"money": money,
		"when": func(ts *timestamppb.Timestamp) string {
			if ts == nil || (ts.Seconds == 0 && ts.Nanos == 0) {
				return "—"
			}
			return ts.AsTime().UTC().Format("2006-01-02 15:04 UTC")
		},
		"lower": func(s fmt.Stringer) string { return strings.ToLower(s.String()) },
		"join":  strings.Join,
		"list":  func(s ...string) []string { return s },
		"statusForm": func(csrf, action, value, label string) map[string]string {
			return map[string]string{"CSRF": csrf, "Action": action, "Value": value, "Label": label}
		},
		"approveForm": func(csrf string, id, version int64, from string) map[string]any {
			return map[string]any{"CSRF": csrf, "ID": id, "Version": version, "From": from}
		},
		"filterOf": func(action, status string, statuses []string) map[string]any {
			return map[string]any{"Action": action, "Status": status, "Statuses": statuses}
		},
		"fields": func(f templateForm, types []string, create bool) map[string]any {
			return map[string]any{"Form": f, "Types": types, "Create": create}
		},
	}
	// A template's logo is shown only if it is an http(s) URL: rows stored
	// before the service checked logos may hold javascript: or data:.
	funcs["logoURL"] = participant.LogoURL
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" || name == "partials" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return fmt.Errorf("parse console template %s: %w", n, err)
		}
		c.pages[name] = t
	}
	return nil
}

// render writes page name with status; a page rendering a refusal answers
// with the refusal's HTTP status.
func (c *Console) render(w http.ResponseWriter, r *http.Request, ss *session, name string, v view) {
	t := c.pages[name]
	if ss != nil {
		v.Identity, v.CSRF = ss.identity, ss.csrf
		if v.Flash == "" {
			v.Flash = c.sessions.takeFlash(ss)
		}
	}
	status := http.StatusOK
	if v.Problem != nil && v.Problem.HTTP >= 400 {
		status = v.Problem.HTTP
	}
	var buf bytes.Buffer
	tmpl := "layout"
	if r.Header.Get("HX-Request") != "" && t.Lookup("fragment") != nil {
		tmpl = "fragment"
	}
	if err := t.ExecuteTemplate(&buf, tmpl, v); err != nil {
		c.d.Log.ErrorContext(r.Context(), "render console page", "page", name, "err", err)
		http.Error(w, "the page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// done sends the browser on after a successful change, with a message for
// the next page (post, redirect, get: a reload does not resubmit).
func (c *Console) done(w http.ResponseWriter, r *http.Request, ss *session, to, flash string) {
	c.sessions.setFlash(ss, flash)
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func pathID(r *http.Request) (int64, *problem) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, invalid("id", "must be a positive number")
	}
	return id, nil
}
