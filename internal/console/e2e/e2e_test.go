// Package e2e_test runs the console's browser test (console.e2e.js):
// Debian's chromium, driven by playwright-core, against a real coupon
// service on MariaDB, Redis and NATS with its HTTP listener, and a webhook
// receiver on loopback.
package e2e_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/gateway"
	"github.com/opencoupon/coupon/internal/natstest"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/internal/webhook"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

const chromium = "/usr/bin/chromium"

// tokens are the development callers of deploy/local/coupon.yaml. Until
// the service authenticates them itself, the console learns identities
// from this table.
type tokens map[string]string

func (t tokens) Identify(_ context.Context, token string) (string, error) {
	if id, ok := t[token]; ok {
		return id, nil
	}
	return "", errors.New("no caller has this token")
}

var devTokens = tokens{"local-admin-alice": "alice", "local-admin-bob": "bob", "local-app": "app", "local-shop": "shop"}

// oneRun is the reconcile run the page shows, with a report on disk.
type oneRun struct{ report string }

func (o oneRun) Runs(context.Context, int) ([]console.ReconcileRun, error) {
	return []console.ReconcileRun{{
		Date:        time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC),
		Totals:      map[string]int64{"COUPON_USED_ORDER_NOT_PAID": 1, "ORPHAN_LOCK": 2},
		MoneyAtRisk: 1234,
		ReportPath:  o.report,
		Pending:     []console.ReconcilePending{{OrderNo: "o-77", CouponCode: "C77", Detail: "payment in flight"}},
	}}, nil
}

// prerequisite skips the test (fails it in CI) when something the browser
// test needs is missing.
func prerequisite(t *testing.T, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("browser test cannot run in CI: %s", why)
	}
	t.Skipf("browser test skipped: %s", why)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// unimplemented reports whether the service answers Unimplemented to a
// call, so the browser test checks the refusal instead of results for
// pieces that have not landed yet.
func unimplemented(err error) string {
	if status.Code(err) == codes.Unimplemented {
		return "unimplemented"
	}
	return ""
}

func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	prerequisite(t, exists(chromium), chromium+" is not installed (apt-get install -y chromium)")
	node, err := exec.LookPath("node")
	prerequisite(t, err == nil, "node is not on PATH (apt-get install -y nodejs)")
	prerequisite(t, exists("node_modules/playwright-core/package.json"), "playwright-core is not installed: run `npm ci` in internal/console/e2e")

	// Events on, so that the Webhooks page has a dispatcher behind it, and
	// a receiver on loopback for the endpoint the browser registers.
	ns := natstest.Start(t)
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Events = relay.Config{URL: ns.URL, Poll: 10 * time.Millisecond}
		c.Webhooks = app.Webhooks{Enabled: true, Refresh: 200 * time.Millisecond}
	})
	hooks := newReceiver(t)
	secretFile := filepath.Join(t.TempDir(), "webhook-secret")
	report := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(report, []byte("<!doctype html><title>report</title><p>reconcile report fixture</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	web, err := gateway.Start(ctx, gateway.Config{Addr: "127.0.0.1:0"}, gateway.Deps{
		GRPCTarget: srv.Addr, Log: log,
		Console: console.Deps{Identities: devTokens, Reconcile: oneRun{report: report}},
	})
	if err != nil {
		t.Fatalf("start http listener: %v", err)
	}
	defer web.Close()

	_, lookupErr := srv.Admin.LookupCoupons(ctx, &couponv1.LookupCouponsRequest{CouponCode: "0000000000000ABC"})
	_, auditErr := srv.Admin.ListAuditLog(ctx, &couponv1.ListAuditLogRequest{PageSize: 1})
	if status.Code(lookupErr) == codes.Unimplemented || status.Code(auditErr) == codes.Unimplemented {
		t.Logf("service answers LookupCoupons: %v; ListAuditLog: %v (an Unimplemented page is checked for its refusal instead)", lookupErr, auditErr)
	}

	shots, err := filepath.Abs("screenshots")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, node, "console.e2e.js")
	cmd.Env = append(os.Environ(),
		"BASE_URL=http://"+web.Addr(), "SCREENSHOTS="+shots,
		"LOOKUP="+unimplemented(lookupErr), "AUDIT="+unimplemented(auditErr),
		"WEBHOOK_URL="+hooks.URL+"/coupon-events", "WEBHOOK_SECRET_FILE="+secretFile,
	)
	out, err := cmd.CombinedOutput()
	t.Logf("console.e2e.js:\n%s", out)
	if err != nil {
		t.Fatalf("browser test failed: %v (screenshots in %s)", err, shots)
	}

	// The browser read the endpoint's secret off the page: every request
	// the receiver got (the claim's event, and its redelivery) is signed
	// with it.
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatalf("the browser test wrote no webhook secret: %v", err)
	}
	got := hooks.got()
	if len(got) < 2 {
		t.Fatalf("the webhook receiver got %d requests, want the claim's event and its redelivery", len(got))
	}
	for _, r := range got {
		if err := webhook.Verify(string(secret), r.sig, r.body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("request for %s: Verify with the secret the page showed = %v", r.id, err)
		}
	}
}

// receiver is the webhook endpoint the browser registers: it keeps each
// request and answers 204.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []request
}

type request struct {
	id, sig string
	body    []byte
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, request{id: r.Header.Get(webhook.HeaderEventID), sig: r.Header.Get(webhook.HeaderSignature), body: body})
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) got() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}
