package webhook_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opencoupon/coupon/internal/webhook"
	"github.com/opencoupon/coupon/participant"
)

func TestCreateEndpointValidates(t *testing.T) {
	tests := []struct {
		name       string
		url        string
		types      []string
		actor      string
		allowHTTP  bool
		wantReason string // "" = accepted
	}{
		{"https", "https://hooks.example.com/coupon?x=1", nil, "admin", false, ""},
		{"https with port", "https://hooks.example.com:8443/coupon", nil, "admin", false, ""},
		{"http to 127.0.0.1", "http://127.0.0.1:8080/hook", nil, "admin", false, ""},
		{"http to ::1", "http://[::1]:8080/hook", nil, "admin", false, ""},
		{"http to localhost", "http://localhost/hook", nil, "admin", false, ""},
		{"http elsewhere with AllowHTTP", "http://hooks.internal/hook", nil, "admin", true, ""},
		{"http elsewhere", "http://hooks.example.com/hook", nil, "admin", false, webhook.ReasonInsecureURL},
		{"http to a private address", "http://10.0.0.5/hook", nil, "admin", false, webhook.ReasonInsecureURL},
		{"ftp", "ftp://hooks.example.com/x", nil, "admin", true, webhook.ReasonInvalidURL},
		{"javascript", "javascript:alert(1)", nil, "admin", true, webhook.ReasonInvalidURL},
		{"userinfo", "https://user:pass@hooks.example.com/x", nil, "admin", false, webhook.ReasonInvalidURL},
		{"user only", "https://user@hooks.example.com/x", nil, "admin", false, webhook.ReasonInvalidURL},
		{"empty host", "https:///path", nil, "admin", false, webhook.ReasonInvalidURL},
		{"port only", "https://:443/path", nil, "admin", false, webhook.ReasonInvalidURL},
		{"relative", "/hook", nil, "admin", false, webhook.ReasonInvalidURL},
		{"no scheme", "hooks.example.com/hook", nil, "admin", false, webhook.ReasonInvalidURL},
		{"empty", "", nil, "admin", false, webhook.ReasonInvalidURL},
		{"fragment", "https://hooks.example.com/x#frag", nil, "admin", false, webhook.ReasonInvalidURL},
		{"port out of range", "https://hooks.example.com:70000/x", nil, "admin", false, webhook.ReasonInvalidURL},
		{"control character", "https://hooks.example.com/\x7f", nil, "admin", false, webhook.ReasonInvalidURL},
		{"too long", "https://hooks.example.com/" + strings.Repeat("a", 2048), nil, "admin", false, webhook.ReasonInvalidURL},
		{"known types", "https://hooks.example.com/x", []string{"coupon.used", "stock.added"}, "admin", false, ""},
		{"unknown type", "https://hooks.example.com/x", []string{"coupon.used", "coupon.stolen"}, "admin", false, webhook.ReasonUnknownEventType},
		{"subject wildcard is no type", "https://hooks.example.com/x", []string{">"}, "admin", false, webhook.ReasonUnknownEventType},
		{"no actor", "https://hooks.example.com/x", nil, "", false, participant.ReasonInvalidArgument},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := mustStore(t, webhook.StoreConfig{AllowHTTP: tt.allowHTTP})
			ep, secret, err := store.CreateEndpoint(ctx, tt.url, tt.types, tt.actor)
			if tt.wantReason != "" {
				if err == nil {
					t.Fatalf("CreateEndpoint(%q, %q) = endpoint %d; want refusal %s", tt.url, tt.types, ep.ID, tt.wantReason)
				}
				if got := participant.ErrorReason(err); got != tt.wantReason {
					t.Errorf("reason = %s (%v); want %s", got, err, tt.wantReason)
				}
				if got := participant.ErrorCode(err); got != participant.EINVALID {
					t.Errorf("code = %s; want %s", got, participant.EINVALID)
				}
				if eps, _ := store.ListEndpoints(ctx); len(eps) != 0 {
					t.Errorf("a refused endpoint was stored: %+v", eps)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateEndpoint(%q) = %v; want accepted", tt.url, err)
			}
			if ep.URL != tt.url || ep.Status != webhook.StatusEnabled || secret == "" {
				t.Errorf("endpoint = %+v, secret %q; want %s ENABLED with a secret", ep, secret, tt.url)
			}
		})
	}
}

func TestStoreEndpoints(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 8, 10, 0, 0, 123456000, time.UTC)
	store := mustStore(t, webhook.StoreConfig{Now: func() time.Time { return now }})

	a, secretA, err := store.CreateEndpoint(ctx, "https://a.example.com/hook", []string{"stock.added", "coupon.used", "coupon.used"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	b, secretB := mustEndpoint(t, store, "https://b.example.com/hook")
	for _, s := range []string{secretA, secretB} {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, webhook.SecretPrefix))
		if !strings.HasPrefix(s, "whsec_") || err != nil || len(raw) != 32 {
			t.Errorf("secret %q: want whsec_ and 32 bytes in base64url (%v)", s, err)
		}
	}
	if secretA == secretB {
		t.Error("two endpoints got the same secret")
	}
	want := webhook.Endpoint{
		ID: a.ID, URL: "https://a.example.com/hook", EventTypes: []string{"coupon.used", "stock.added"},
		Status: webhook.StatusEnabled, CreatedBy: "alice", CreatedAt: now, UpdatedAt: now,
	}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Errorf("created endpoint (-want +got):\n%s", diff)
	}
	got, err := store.GetEndpoint(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetEndpoint (-want +got):\n%s", diff)
	}
	if !a.Accepts("coupon.used") || a.Accepts("coupon.claimed") || !b.Accepts("coupon.claimed") {
		t.Error("Accepts: want a to take only its types and b every type")
	}

	now = now.Add(time.Minute)
	off, err := store.SetEnabled(ctx, a.ID, false, "maintenance by alice")
	if err != nil {
		t.Fatal(err)
	}
	if off.Status != webhook.StatusDisabled || off.DisabledReason != "maintenance by alice" || !off.UpdatedAt.Equal(now) {
		t.Errorf("disabled endpoint = %+v; want DISABLED, the reason, updated now", off)
	}
	on, err := store.SetEnabled(ctx, a.ID, true, "")
	if err != nil {
		t.Fatal(err)
	}
	if on.Status != webhook.StatusEnabled || on.DisabledReason != "" {
		t.Errorf("enabled endpoint = %+v; want ENABLED without reason", on)
	}

	list, err := store.ListEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID {
		t.Errorf("ListEndpoints = %+v; want a and b", list)
	}
	if err := store.DeleteEndpoint(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"GetEndpoint after delete":    func() error { _, err := store.GetEndpoint(ctx, a.ID); return err }(),
		"DeleteEndpoint after delete": store.DeleteEndpoint(ctx, a.ID),
		"SetEnabled after delete":     func() error { _, err := store.SetEnabled(ctx, a.ID, true, ""); return err }(),
	} {
		if participant.ErrorReason(err) != webhook.ReasonEndpointNotFound || participant.ErrorCode(err) != participant.ENOTFOUND {
			t.Errorf("%s = %v; want %s", what, err, webhook.ReasonEndpointNotFound)
		}
	}
}

func TestRecordDeliveryAndPaging(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	store := mustStore(t, webhook.StoreConfig{Now: func() time.Time { return now }})
	ep, _ := mustEndpoint(t, store, "https://a.example.com/hook")

	first := now.Add(time.Second) // the first step's time
	steps := []struct {
		d    webhook.Delivery
		want webhook.Failures
	}{
		{webhook.Delivery{StatusCode: 500, Error: "status 500"}, webhook.Failures{Consecutive: 1, Since: first}},
		{webhook.Delivery{Error: "connection refused"}, webhook.Failures{Consecutive: 2, Since: first}},
		{webhook.Delivery{Manual: true, StatusCode: 204, Delivered: true}, webhook.Failures{Consecutive: 2, Since: first}},
		{webhook.Delivery{Manual: true, StatusCode: 500}, webhook.Failures{Consecutive: 2, Since: first}},
		{webhook.Delivery{StatusCode: 200, Delivered: true}, webhook.Failures{}},
		{webhook.Delivery{StatusCode: 410, Error: strings.Repeat("é", 1000)}, webhook.Failures{Consecutive: 1, Since: first.Add(5 * time.Second)}},
	}
	for i, s := range steps {
		now = now.Add(time.Second)
		d := s.d
		d.EndpointID, d.EventID, d.EventType, d.StreamSeq, d.Attempt = ep.ID, "C1.1", "coupon.claimed", 7, i+1
		got, err := store.RecordDelivery(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("step %d: failures (-want +got):\n%s", i, diff)
		}
	}
	got, err := store.GetEndpoint(ctx, ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ConsecutiveFailures != 1 || !got.FailingSince.Equal(now) {
		t.Errorf("endpoint failures = %d since %s; want 1 since %s", got.ConsecutiveFailures, got.FailingSince, now)
	}

	all := mustDeliveries(t, store, ep.ID)
	if len(all) != len(steps) {
		t.Fatalf("ListDeliveries = %d rows; want %d", len(all), len(steps))
	}
	if all[0].Attempt != len(steps) || !all[1].Delivered || all[1].StatusCode != 200 || !all[2].Manual {
		t.Errorf("ListDeliveries not newest first or fields lost: %+v", all[:3])
	}
	if n := len(all[0].Error); n > 1024 || !strings.HasPrefix(all[0].Error, "éé") {
		t.Errorf("long error stored as %d bytes %q...; want at most 1024, cut on a character", n, all[0].Error[:8])
	}
	var paged []webhook.Delivery
	for page := (webhook.Page{Limit: 4}); ; {
		ds, err := store.ListDeliveries(ctx, ep.ID, page)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		paged = append(paged, ds...)
		page.Before = ds[len(ds)-1].ID
	}
	if diff := cmp.Diff(all, paged); diff != "" {
		t.Errorf("paging by 4 (-all +paged):\n%s", diff)
	}
	if _, err := store.ListDeliveries(ctx, ep.ID, webhook.Page{Limit: 501}); participant.ErrorCode(err) != participant.EINVALID {
		t.Errorf("ListDeliveries(limit 501) = %v; want invalid", err)
	}
}

// TestPruneDeliveries deletes the attempts older than the cut, in
// batches, oldest first, and keeps the rest, including a young attempt
// recorded between old ones (a replica's clock behind) until a later round.
func TestPruneDeliveries(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	store := mustStore(t, webhook.StoreConfig{Now: func() time.Time { return now }})
	ep, _ := mustEndpoint(t, store, "https://a.example.com/hook")
	record := func(at time.Time, event string) {
		t.Helper()
		if _, err := store.RecordDelivery(ctx, webhook.Delivery{EndpointID: ep.ID, EventID: event, EventType: "coupon.claimed",
			StreamSeq: 1, Attempt: 1, StatusCode: 204, Delivered: true, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	cut := now.Add(-30 * 24 * time.Hour)
	for i := range 25 {
		record(cut.Add(-time.Duration(25-i)*time.Minute), fmt.Sprintf("OLD%d.1", i))
	}
	record(cut.Add(time.Minute), "YOUNG0.1")
	record(cut.Add(-time.Minute), "OLD25.1") // after a young one
	for i := range 5 {
		record(now.Add(-time.Duration(i)*time.Hour), fmt.Sprintf("YOUNG%d.1", i+1))
	}

	n, err := store.PruneDeliveries(ctx, cut, 10)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, d := range mustDeliveries(t, store, ep.ID) {
		left = append(left, strings.TrimSuffix(d.EventID, ".1"))
	}
	slices.Sort(left)
	if want := []string{"YOUNG0", "YOUNG1", "YOUNG2", "YOUNG3", "YOUNG4", "YOUNG5"}; n != 26 || !slices.Equal(left, want) {
		t.Errorf("PruneDeliveries = %d, left %v; want 26 deleted, %v left", n, left, want)
	}
	if n, err := store.PruneDeliveries(ctx, cut, 10); n != 0 || err != nil {
		t.Errorf("PruneDeliveries again = %d, %v; want 0", n, err)
	}
}
