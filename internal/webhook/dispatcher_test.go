package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/internal/webhook"
	"github.com/opencoupon/coupon/participant"
)

// fast retries quickly so that tests do not wait for real backoffs.
var fast = webhook.Config{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, RefreshInterval: time.Hour}

func TestNewRefusesBadConfig(t *testing.T) {
	js := mustJetStream(t)
	store := webhook.NewStore(db, webhook.StoreConfig{})
	tests := []struct {
		name string
		cfg  webhook.Config
		want string
	}{
		{"ack wait not above timeout", webhook.Config{Timeout: 30 * time.Second, AckWait: 30 * time.Second}, "ack wait"},
		{"negative horizon", webhook.Config{Horizon: -time.Hour}, "negative"},
		{"negative disable after", webhook.Config{DisableAfter: -1}, "negative"},
		{"max backoff below initial", webhook.Config{InitialBackoff: time.Minute, MaxBackoff: time.Second}, "max backoff"},
		{"retention within the horizon", webhook.Config{Horizon: 48 * time.Hour, Retention: 24 * time.Hour}, "retention"},
		{"retention equal to the default horizon", webhook.Config{Retention: webhook.DefaultHorizon}, "retention"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := webhook.New(js, store, nil, nil, tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v; want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := webhook.New(js, store, nil, nil, webhook.Config{}); err != nil {
		t.Errorf("New with defaults = %v", err)
	}
}

func TestDeliversSignedEvents(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	rc := newReceiver(t, ok)
	ep, secret := mustEndpoint(t, store, rc.URL+"/hook")
	for i := 1; i <= 3; i++ {
		publish(t, js, event(fmt.Sprintf("C1.%d", i), "coupon.claimed"))
	}
	d := runDispatcher(t, js, store, fast)
	testenv.Eventually(t, wait, "3 events delivered", func() bool { return len(rc.got()) >= 3 })

	if diff := cmp.Diff([]string{"C1.1", "C1.2", "C1.3"}, rc.ids()); diff != "" {
		t.Errorf("received ids, in order (-want +got):\n%s", diff)
	}
	r := rc.got()[0]
	if err := webhook.Verify(secret, r.sig, r.body, time.Now(), time.Minute); err != nil {
		t.Errorf("Verify(received request) = %v", err)
	}
	tampered := []byte(strings.Replace(string(r.body), "C1.1", "C1.9", 1))
	if err := webhook.Verify(secret, r.sig, tampered, time.Now(), time.Minute); !errors.Is(err, webhook.ErrSignatureMismatch) {
		t.Errorf("Verify(tampered body) = %v; want mismatch", err)
	}
	if err := webhook.Verify("whsec_not-the-secret", r.sig, r.body, time.Now(), time.Minute); !errors.Is(err, webhook.ErrSignatureMismatch) {
		t.Errorf("Verify(wrong secret) = %v; want mismatch", err)
	}
	if r.typ != "coupon.claimed" || r.contentType != "application/json" {
		t.Errorf("headers: type %q, content type %q", r.typ, r.contentType)
	}
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	want := map[string]any{
		"id": "C1.1", "type": "coupon.claimed", "schema_version": float64(1), "occurred_at": "2027-01-15T08:00:00Z",
		"coupon_code": "C1", "coupon_id": "42", "user_id": "7", "template_id": "3", "sequence": "1",
	}
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("body: protojson with proto names, no zero fields (-want +got):\n%s", diff)
	}

	testenv.Eventually(t, wait, "3 attempts recorded", func() bool { return len(mustDeliveries(t, store, ep.ID)) == 3 })
	for _, del := range mustDeliveries(t, store, ep.ID) {
		if !del.Delivered || del.StatusCode != http.StatusNoContent || del.Attempt != 1 || del.StreamSeq == 0 || del.EventType != "coupon.claimed" {
			t.Errorf("delivery %+v; want delivered at the first attempt with status 204 and a stream sequence", del)
		}
	}
	if got := d.metric(t, "coupon_webhook_deliveries_total", "delivered"); got != 3 {
		t.Errorf("deliveries_total{delivered} = %v; want 3", got)
	}
}

func TestRetriesUntilDelivered(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	rc := newReceiver(t, func(n int, _ request) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	ep, secret := mustEndpoint(t, store, rc.URL)
	d := runDispatcher(t, js, store, fast)
	publish(t, js, event("C2.1", "coupon.locked"))

	testenv.Eventually(t, wait, "the 4th attempt recorded", func() bool { return len(mustDeliveries(t, store, ep.ID)) == 4 })
	dels := mustDeliveries(t, store, ep.ID)
	slices.Reverse(dels)
	var got []string
	for _, del := range dels {
		got = append(got, fmt.Sprintf("attempt %d: %d delivered=%t", del.Attempt, del.StatusCode, del.Delivered))
	}
	want := []string{"attempt 1: 503 delivered=false", "attempt 2: 503 delivered=false", "attempt 3: 503 delivered=false", "attempt 4: 200 delivered=true"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	if gap := dels[3].CreatedAt.Sub(dels[2].CreatedAt); gap < 80*time.Millisecond {
		t.Errorf("4th attempt %s after the 3rd; want at least the backoff 80ms (20ms doubled twice)", gap)
	}
	for _, r := range rc.got() {
		if r.id != "C2.1" {
			t.Errorf("received %s; want only C2.1", r.id)
		}
		if err := webhook.Verify(secret, r.sig, r.body, time.Now(), time.Minute); err != nil {
			t.Errorf("Verify(retry) = %v", err)
		}
	}
	e, err := store.GetEndpoint(context.Background(), ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.ConsecutiveFailures != 0 || !e.FailingSince.IsZero() || e.Status != webhook.StatusEnabled {
		t.Errorf("endpoint after recovery = %+v; want no run of failures, ENABLED", e)
	}
	if f, ok := d.metric(t, "coupon_webhook_deliveries_total", "failed"), d.metric(t, "coupon_webhook_deliveries_total", "delivered"); f != 3 || ok != 1 {
		t.Errorf("deliveries_total failed %v, delivered %v; want 3 and 1", f, ok)
	}
}

// TestFailingEndpointIsolatedAndDisabled: an endpoint that hangs and then
// fails delays no other, and is disabled after DisableAfter failures.
func TestFailingEndpointIsolatedAndDisabled(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	healthy := newReceiver(t, ok)
	release := make(chan struct{})
	var hung atomic.Int32
	failing := newReceiver(t, func(n int, _ request) int {
		if n == 1 {
			hung.Store(1)
			<-release
		}
		return http.StatusInternalServerError
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	good, _ := mustEndpoint(t, store, healthy.URL)
	bad, _ := mustEndpoint(t, store, failing.URL)
	cfg := fast
	cfg.DisableAfter = 3
	cfg.Timeout, cfg.AckWait = 5*time.Minute, 6*time.Minute // the hanging request must not time out
	d := runDispatcher(t, js, store, cfg)

	const n = 20
	var want []string
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("C3.%d", i)
		want = append(want, id)
		publish(t, js, event(id, "coupon.used"))
	}
	testenv.Eventually(t, wait, "the healthy endpoint to receive every event", func() bool { return len(healthy.got()) >= n })
	if diff := cmp.Diff(want, healthy.ids()); diff != "" {
		t.Errorf("healthy endpoint received (-want +got):\n%s", diff)
	}
	// All of it happened while the failing endpoint's first request hung.
	if hung.Load() != 1 || len(failing.got()) != 1 {
		t.Fatalf("failing endpoint: hung %d, %d requests; want its first request still hanging", hung.Load(), len(failing.got()))
	}

	close(release)
	testenv.Eventually(t, wait, "the failing endpoint disabled", func() bool {
		e, err := store.GetEndpoint(context.Background(), bad.ID)
		return err == nil && e.Status == webhook.StatusDisabled
	})
	e, err := store.GetEndpoint(context.Background(), bad.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.ConsecutiveFailures != 3 || !strings.Contains(e.DisabledReason, "3 consecutive failed deliveries") {
		t.Errorf("disabled endpoint = %+v; want 3 failures and the reason", e)
	}
	if got := d.metric(t, "coupon_webhook_endpoints_disabled_total", ""); got != 1 {
		t.Errorf("endpoints_disabled_total = %v; want 1", got)
	}
	if g, _ := store.GetEndpoint(context.Background(), good.ID); g.Status != webhook.StatusEnabled {
		t.Errorf("healthy endpoint %+v; want ENABLED", g)
	}

	// Its consumer stopped itself (the next refresh is an hour away): no
	// retry reaches it. Waiting several max backoffs is the only way to see
	// an absence.
	time.Sleep(5 * fast.MaxBackoff)
	if got := len(failing.got()); got != 3 {
		t.Errorf("disabled endpoint got %d requests; want 3, none after it was disabled", got)
	}
	d.refresh(t)
	publish(t, js, event("C3.99", "coupon.used"))
	testenv.Eventually(t, wait, "the healthy endpoint to receive C3.99", func() bool { return healthy.count("C3.99") == 1 })
	if got := len(failing.got()); got != 3 {
		t.Errorf("disabled endpoint got %d requests after a refresh; want 3", got)
	}
	if got := len(mustDeliveries(t, store, bad.ID)); got != 3 {
		t.Errorf("disabled endpoint has %d attempts recorded; want 3", got)
	}
}

func TestGivesUpAfterHorizon(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	rc := newReceiver(t, func(_ int, r request) int {
		if r.id == "C4.1" {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	ep, _ := mustEndpoint(t, store, rc.URL)
	cfg := fast
	cfg.Horizon = 500 * time.Millisecond
	d := runDispatcher(t, js, store, cfg)
	publish(t, js, event("C4.1", "coupon.expired"))
	publish(t, js, event("C4.2", "coupon.expired"))

	testenv.Eventually(t, wait, "C4.2 delivered once C4.1 was given up", func() bool { return rc.count("C4.2") == 1 })
	testenv.Eventually(t, wait, "C4.2's attempt recorded", func() bool {
		ds := mustDeliveries(t, store, ep.ID)
		return len(ds) > 0 && ds[0].EventID == "C4.2"
	})
	dels := mustDeliveries(t, store, ep.ID)[1:] // C4.1's, newest first
	last, first := dels[0], dels[len(dels)-1]
	if !last.GaveUp || last.Delivered || last.EventID != "C4.1" {
		t.Errorf("last attempt at C4.1 = %+v; want given up", last)
	}
	for _, del := range dels[1:] {
		if del.GaveUp || del.EventID != "C4.1" {
			t.Errorf("earlier attempt %+v; want C4.1, not given up", del)
		}
	}
	if span := last.CreatedAt.Sub(first.CreatedAt); span < cfg.Horizon {
		t.Errorf("C4.1 retried for %s; want at least the horizon %s", span, cfg.Horizon)
	}
	if rc.count("C4.1") != len(dels) {
		t.Errorf("C4.1 received %d times; want %d, once per recorded attempt", rc.count("C4.1"), len(dels))
	}
	if got := d.metric(t, "coupon_webhook_deliveries_total", "gave_up"); got != 1 {
		t.Errorf("deliveries_total{gave_up} = %v; want 1", got)
	}
}

func TestDeliversEachEventOnce(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	rc := newReceiver(t, ok)
	mustEndpoint(t, store, rc.URL)
	d := runDispatcher(t, js, store, fast)

	publish(t, js, event("C5.1", "coupon.claimed"))
	if ack := publish(t, js, event("C5.1", "coupon.claimed")); !ack.Duplicate {
		t.Errorf("second publish of C5.1: ack %+v; want a duplicate", ack)
	}
	publish(t, js, event("C5.2", "coupon.claimed"))
	testenv.Eventually(t, wait, "C5.2 delivered", func() bool { return rc.count("C5.2") == 1 })

	// A restarted dispatcher binds to the same durable consumer and goes on
	// after the last acknowledged event.
	d.stop()
	runDispatcher(t, js, store, fast)
	publish(t, js, event("C5.3", "coupon.claimed"))
	testenv.Eventually(t, wait, "C5.3 delivered", func() bool { return rc.count("C5.3") == 1 })
	if diff := cmp.Diff([]string{"C5.1", "C5.2", "C5.3"}, rc.ids()); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
}

func TestReplicasShareConsumers(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	rc := newReceiver(t, ok)
	ep, _ := mustEndpoint(t, store, rc.URL)
	a := runDispatcher(t, js, store, fast)
	b := runDispatcher(t, js, store, fast)

	const n = 30
	var want []string
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("C6.%d", i)
		want = append(want, id)
		publish(t, js, event(id, "coupon.claimed"))
	}
	testenv.Eventually(t, wait, "every event delivered", func() bool { return rc.count(want[n-1]) == 1 })
	if diff := cmp.Diff(want, rc.ids()); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	testenv.Eventually(t, wait, "every attempt recorded", func() bool { return len(mustDeliveries(t, store, ep.ID)) >= n })
	if got := len(mustDeliveries(t, store, ep.ID)); got != n {
		t.Errorf("%d attempts recorded; want %d", got, n)
	}
	sa, sb := a.metric(t, "coupon_webhook_deliveries_total", "delivered"), b.metric(t, "coupon_webhook_deliveries_total", "delivered")
	if sa+sb != n {
		t.Errorf("replicas delivered %v + %v; want %d in all", sa, sb, n)
	}
	t.Logf("replica a delivered %v, b %v", sa, sb)
}

func TestFiltersByType(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	all, used, two := newReceiver(t, ok), newReceiver(t, ok), newReceiver(t, ok)
	mustEndpoint(t, store, all.URL)
	mustEndpoint(t, store, used.URL, "coupon.used")
	mustEndpoint(t, store, two.URL, "coupon.locked", "coupon.claimed")
	runDispatcher(t, js, store, fast)

	types := []string{"coupon.claimed", "coupon.used", "template.changed", "coupon.locked", "stock.added", "coupon.released", "coupon.used", "coupon.locked"}
	for i, typ := range types {
		publish(t, js, event(fmt.Sprintf("C7.%d", i+1), typ))
	}
	// Each endpoint's last event is the last published, and each endpoint
	// receives in stream order: once it is in, nothing more is coming.
	testenv.Eventually(t, wait, "every endpoint to get its last event", func() bool {
		return all.count("C7.8") == 1 && used.count("C7.7") == 1 && two.count("C7.8") == 1
	})
	for _, c := range []struct {
		name string
		rc   *receiver
		want []string
	}{
		{"all types", all, []string{"C7.1", "C7.2", "C7.3", "C7.4", "C7.5", "C7.6", "C7.7", "C7.8"}},
		{"coupon.used", used, []string{"C7.2", "C7.7"}},
		{"coupon.locked and coupon.claimed", two, []string{"C7.1", "C7.4", "C7.8"}},
	} {
		if diff := cmp.Diff(c.want, c.rc.ids()); diff != "" {
			t.Errorf("%s received (-want +got):\n%s", c.name, diff)
		}
	}
}

func TestRedirectIsAFailure(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	target := newReceiver(t, ok)
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
	t.Cleanup(redirect.Close)
	ep, _ := mustEndpoint(t, store, redirect.URL)
	runDispatcher(t, js, store, webhook.Config{InitialBackoff: time.Hour, RefreshInterval: time.Hour})
	publish(t, js, event("C8.1", "coupon.returned"))
	testenv.Eventually(t, wait, "an attempt recorded", func() bool { return len(mustDeliveries(t, store, ep.ID)) == 1 })
	if del := mustDeliveries(t, store, ep.ID)[0]; del.Delivered || del.StatusCode != http.StatusFound {
		t.Errorf("attempt %+v; want a failure with status 302", del)
	}
	if n := len(target.got()); n != 0 {
		t.Errorf("the redirect target got %d requests; want none", n)
	}
}

func TestEnableDisableDeleteTakeEffectOnRefresh(t *testing.T) {
	ctx := context.Background()
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	marker, rc := newReceiver(t, ok), newReceiver(t, ok)
	mustEndpoint(t, store, marker.URL)
	ep, _ := mustEndpoint(t, store, rc.URL)
	d := runDispatcher(t, js, store, fast)

	publish(t, js, event("C9.1", "coupon.claimed"))
	testenv.Eventually(t, wait, "C9.1 delivered to both", func() bool { return marker.count("C9.1") == 1 && rc.count("C9.1") == 1 })

	if _, err := store.SetEnabled(ctx, ep.ID, false, "paused by test"); err != nil {
		t.Fatal(err)
	}
	d.refresh(t) // returns once the consumer has stopped
	publish(t, js, event("C9.2", "coupon.claimed"))
	testenv.Eventually(t, wait, "C9.2 delivered to the marker", func() bool { return marker.count("C9.2") == 1 })
	if rc.count("C9.2") != 0 {
		t.Fatalf("a disabled endpoint received C9.2")
	}

	if _, err := store.SetEnabled(ctx, ep.ID, true, ""); err != nil {
		t.Fatal(err)
	}
	d.refresh(t)
	testenv.Eventually(t, wait, "C9.2 delivered once re-enabled", func() bool { return rc.count("C9.2") == 1 })

	stream, err := js.Stream(ctx, "COUPON_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("webhook-%d", ep.ID)
	if _, err := stream.Consumer(ctx, name); err != nil {
		t.Fatalf("consumer %s: %v", name, err)
	}
	if err := store.DeleteEndpoint(ctx, ep.ID); err != nil {
		t.Fatal(err)
	}
	d.refresh(t)
	if _, err := stream.Consumer(ctx, name); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("consumer %s after the endpoint's deletion: %v; want not found", name, err)
	}
}

func TestRedeliver(t *testing.T) {
	ctx := context.Background()
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	rc := newReceiver(t, ok)
	ep, secret := mustEndpoint(t, store, rc.URL)
	d := runDispatcher(t, js, store, fast)
	publish(t, js, event("C10.1", "stock.added"))
	testenv.Eventually(t, wait, "C10.1 delivered and recorded", func() bool { return len(mustDeliveries(t, store, ep.ID)) == 1 })

	del, err := d.Redeliver(ctx, ep.ID, "C10.1")
	if err != nil {
		t.Fatalf("Redeliver: %v", err)
	}
	if !del.Delivered || !del.Manual || del.Attempt != 2 || del.EventType != "stock.added" {
		t.Errorf("Redeliver = %+v; want a delivered manual 2nd attempt", del)
	}
	got := rc.got()
	if len(got) != 2 || got[1].id != "C10.1" || string(got[1].body) != string(got[0].body) {
		t.Fatalf("receiver got %+v; want C10.1 twice with the same body", got)
	}
	if err := webhook.Verify(secret, got[1].sig, got[1].body, time.Now(), time.Minute); err != nil {
		t.Errorf("Verify(redelivery) = %v", err)
	}
	if dels := mustDeliveries(t, store, ep.ID); len(dels) != 2 || !dels[0].Manual {
		t.Errorf("deliveries %+v; want the manual attempt recorded", dels)
	}

	for _, c := range []struct {
		name     string
		endpoint int64
		event    string
		reason   string
	}{
		{"unknown event", ep.ID, "C10.404", webhook.ReasonEventNotFound},
		{"unknown endpoint", ep.ID + 1000, "C10.1", webhook.ReasonEndpointNotFound},
	} {
		if _, err := d.Redeliver(ctx, c.endpoint, c.event); participant.ErrorReason(err) != c.reason {
			t.Errorf("Redeliver(%s) = %v; want %s", c.name, err, c.reason)
		}
	}
	other, _ := mustEndpoint(t, store, rc.URL, "coupon.used")
	if _, err := d.Redeliver(ctx, other.ID, "C10.1"); participant.ErrorReason(err) != webhook.ReasonEventNotSubscribed {
		t.Errorf("Redeliver(to an endpoint without the type) = %v; want %s", err, webhook.ReasonEventNotSubscribed)
	}
	if n := len(rc.got()); n != 2 {
		t.Errorf("receiver got %d requests; want 2, refused redeliveries sending nothing", n)
	}
}

func TestRunStopsAndRefreshNeedsRun(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	d, err := webhook.New(js, store, nil, nil, fast)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Refresh(context.Background()); err == nil {
		t.Error("Refresh without Run = nil; want an error")
	}
	rd := runDispatcher(t, js, store, fast)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rd.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run = %v; want already running", err)
	}
	rd.stop()
	if err := rd.Refresh(context.Background()); err == nil {
		t.Error("Refresh after Run returned = nil; want an error")
	}
}

// TestStopHandsBackInFlightEvent: stopping a dispatcher cuts its requests
// short, leaves none of its goroutines behind and hands the event back
// unrecorded, so the next dispatcher delivers it.
func TestStopHandsBackInFlightEvent(t *testing.T) {
	js := mustJetStream(t)
	store := mustStore(t, webhook.StoreConfig{})
	release := make(chan struct{})
	var hung atomic.Int32
	rc := newReceiver(t, func(n int, _ request) int {
		if n == 1 {
			hung.Store(1)
			<-release
		}
		return http.StatusOK
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	ep, _ := mustEndpoint(t, store, rc.URL)
	cfg := fast
	cfg.Timeout, cfg.AckWait = 5*time.Minute, 6*time.Minute
	d := runDispatcher(t, js, store, cfg)
	publish(t, js, event("C11.1", "coupon.released"))
	testenv.Eventually(t, wait, "the request to hang", func() bool { return hung.Load() == 1 })

	d.stop() // fails the test unless Run returns promptly
	if stacks := dispatcherStacks(); stacks != "" {
		t.Errorf("goroutines of the dispatcher left after Run returned:\n%s", stacks)
	}
	if n := len(mustDeliveries(t, store, ep.ID)); n != 0 {
		t.Errorf("%d attempts recorded; want none for the attempt cut short", n)
	}
	close(release)

	runDispatcher(t, js, store, cfg)
	testenv.Eventually(t, wait, "C11.1 delivered by the next dispatcher", func() bool { return len(mustDeliveries(t, store, ep.ID)) == 1 })
	if del := mustDeliveries(t, store, ep.ID)[0]; !del.Delivered || del.EventID != "C11.1" {
		t.Errorf("attempt %+v; want C11.1 delivered", del)
	}
}

// dispatcherStacks returns the stacks of goroutines running Dispatcher code.
func dispatcherStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/webhook.(*Dispatcher)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
