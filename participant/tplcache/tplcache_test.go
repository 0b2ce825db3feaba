package tplcache_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/fake"
	"github.com/opencoupon/coupon/participant/tplcache"
)

// These tests run the cache over the in-memory fakes of its ports, under
// -short; participant's safety tests run it over MariaDB and Redis.

var start = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

const refresh = time.Second

type env struct {
	t     *testing.T
	clock *fake.Clock
	ports *fake.Ports
	cache *tplcache.Cache
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clock := fake.NewClock(start)
	ports := fake.New(clock)
	return &env{t: t, clock: clock, ports: ports, cache: newCache(ports, ports.Catalog, ports.Blobs)}
}

func newCache(p *fake.Ports, cat participant.Catalog, blobs participant.Blobs) *tplcache.Cache {
	return tplcache.New(tplcache.Deps{Catalog: cat, Blobs: blobs, Leases: p.Leases, Now: p.Clock.Now},
		tplcache.Config{Refresh: refresh, RedisTTL: time.Minute})
}

// template stores a campaign and a template of it.
func (e *env) template() *participant.Template {
	e.t.Helper()
	ctx, now, actor := e.t.Context(), e.clock.Now(), participant.Actor{Identity: "alice"}
	c := &participant.Campaign{Name: "spring", Type: "promo", Status: participant.CampaignActive,
		StartTime: now.Add(-time.Hour), EndTime: now.Add(24 * time.Hour), CreatedAt: now, UpdatedAt: now}
	if _, err := e.ports.Catalog.CreateCampaign(ctx, c, actor); err != nil {
		e.t.Fatal(err)
	}
	t := &participant.Template{CampaignID: c.ID, Name: "five off", Type: participant.FixedAmount, DiscountAmount: 500,
		TotalStock: 10, SubStockCount: 1, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(24 * time.Hour),
		Status: participant.TemplateActive, Version: 1, CreatedAt: now, UpdatedAt: now}
	if _, err := e.ports.Catalog.CreateTemplate(ctx, t, actor); err != nil {
		e.t.Fatal(err)
	}
	return t
}

// rename renames the template in the catalog only, as another replica's
// change would before its invalidation arrives.
func (e *env) rename(id int64, name string) {
	e.t.Helper()
	if _, err := e.ports.Catalog.UpdateTemplate(e.t.Context(), id, func(t *participant.Template) error {
		t.Name = name
		return nil
	}, participant.Actor{Identity: "alice"}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(id int64) *participant.Template {
	e.t.Helper()
	t, camp, err := e.cache.Get(e.t.Context(), id)
	if err != nil {
		e.t.Fatalf("Get(%d): %v", id, err)
	}
	if camp == nil || camp.ID != t.CampaignID {
		e.t.Fatalf("Get(%d) campaign = %+v, want campaign %d", id, camp, t.CampaignID)
	}
	return t
}

func blobKey(id int64) string { return "tpl:" + strconv.FormatInt(id, 10) }

func TestGetLoadsOnceThenServesFromMemory(t *testing.T) {
	e := newEnv(t)
	tpl := e.template()
	if got := e.cache.Cached(tpl.ID); got != nil {
		t.Fatalf("Cached before any Get = %+v, want nil", got)
	}
	first := e.get(tpl.ID)
	if _, ok, _ := e.ports.Blobs.GetBlob(t.Context(), blobKey(tpl.ID)); !ok {
		t.Errorf("the load left no Redis blob under %s", blobKey(tpl.ID))
	}
	if second := e.get(tpl.ID); second != first {
		t.Errorf("second Get returned another pointer: a version is one pointer until reloaded")
	}
	if got := e.cache.Cached(tpl.ID); got != first {
		t.Errorf("Cached = %p, want the pointer Get returned %p", got, first)
	}
	if hits, misses := e.cache.Counts(); hits != 1 || misses != 1 {
		t.Errorf("Counts = %d hits, %d misses; want 1, 1 (Cached counts nothing)", hits, misses)
	}
}

func TestGetUnknownIsNotFound(t *testing.T) {
	e := newEnv(t)
	if _, _, err := e.cache.Get(t.Context(), 404); participant.ErrorCode(err) != participant.ENOTFOUND {
		t.Fatalf("Get of an unknown template: %v, want ENOTFOUND", err)
	}
	if got := e.cache.Cached(404); got != nil {
		t.Fatalf("an unknown template was cached: %+v", got)
	}
}

// Another replica changed the template and dropped the Redis blob: this
// replica serves its old entry until the refresh interval has passed, then
// serves it once more while one background reload replaces it.
func TestStaleWhileRevalidate(t *testing.T) {
	e := newEnv(t)
	tpl := e.template()
	e.get(tpl.ID)
	e.rename(tpl.ID, "renamed")
	if err := e.ports.Blobs.DelBlobs(t.Context(), blobKey(tpl.ID)); err != nil {
		t.Fatal(err)
	}
	if got := e.get(tpl.ID).Name; got != "five off" {
		t.Fatalf("within the refresh interval Get = %q, want the cached %q", got, "five off")
	}
	e.clock.Advance(refresh)
	if got := e.get(tpl.ID).Name; got != "five off" {
		t.Fatalf("the read that starts the reload = %q, want the stale %q served at once", got, "five off")
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.cache.Cached(tpl.ID) == nil || e.cache.Cached(tpl.ID).Name != "renamed" {
		if time.Now().After(deadline) {
			t.Fatalf("the background reload never replaced the entry")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestInvalidateDropsBothLevels(t *testing.T) {
	e := newEnv(t)
	tpl := e.template()
	e.get(tpl.ID)
	e.rename(tpl.ID, "renamed")
	if err := e.cache.Invalidate(t.Context(), tpl.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.cache.Cached(tpl.ID); got != nil {
		t.Fatalf("Cached after Invalidate = %+v, want nil", got)
	}
	if _, ok, _ := e.ports.Blobs.GetBlob(t.Context(), blobKey(tpl.ID)); ok {
		t.Fatalf("the Redis blob survived Invalidate")
	}
	if got := e.get(tpl.ID).Name; got != "renamed" {
		t.Fatalf("Get after Invalidate = %q, want %q", got, "renamed")
	}
	if err := e.cache.Invalidate(t.Context()); err != nil {
		t.Fatalf("Invalidate of nothing: %v", err)
	}
}

var errRedis = errors.New("redis down")

// failingDel is Redis refusing invalidations.
type failingDel struct{ participant.Blobs }

func (failingDel) DelBlobs(context.Context, ...string) error { return errRedis }

func TestInvalidateForgetsLocallyWhenRedisFails(t *testing.T) {
	e := newEnv(t)
	e.cache = newCache(e.ports, e.ports.Catalog, failingDel{e.ports.Blobs})
	tpl := e.template()
	e.get(tpl.ID)
	if err := e.cache.Invalidate(t.Context(), tpl.ID); !errors.Is(err, errRedis) {
		t.Fatalf("Invalidate with Redis down: %v, want %v", err, errRedis)
	}
	if got := e.cache.Cached(tpl.ID); got != nil {
		t.Fatalf("Cached after a failed Invalidate = %+v, want nil: this replica forgets whatever Redis says", got)
	}
}

// holdingCatalog holds the first GetTemplate until released, so a test
// can invalidate while a load is between reading MySQL and storing.
type holdingCatalog struct {
	participant.Catalog
	read, release chan struct{}
	held          bool
}

func (c *holdingCatalog) GetTemplate(ctx context.Context, id int64) (*participant.Template, error) {
	t, err := c.Catalog.GetTemplate(ctx, id)
	if !c.held {
		c.held = true
		close(c.read)
		<-c.release
	}
	return t, err
}

// A load that read MySQL before an invalidation may answer its caller, but
// must not store what it read in memory (epochs) or in Redis (stamps).
func TestLoadOverlappingInvalidateStoresNothing(t *testing.T) {
	e := newEnv(t)
	tpl := e.template()
	cat := &holdingCatalog{Catalog: e.ports.Catalog, read: make(chan struct{}), release: make(chan struct{})}
	e.cache = newCache(e.ports, cat, e.ports.Blobs)
	done := make(chan error, 1)
	go func() {
		_, _, err := e.cache.Get(context.Background(), tpl.ID)
		done <- err
	}()
	<-cat.read
	e.rename(tpl.ID, "renamed")
	if err := e.cache.Invalidate(t.Context(), tpl.ID); err != nil {
		t.Fatal(err)
	}
	close(cat.release)
	if err := <-done; err != nil {
		t.Fatalf("the overlapping Get: %v", err)
	}
	if got := e.cache.Cached(tpl.ID); got != nil {
		t.Fatalf("memory kept %q, read before the invalidation", got.Name)
	}
	if b, ok, _ := e.ports.Blobs.GetBlob(t.Context(), blobKey(tpl.ID)); ok {
		t.Fatalf("Redis kept the version read before the invalidation: %s", b)
	}
	if got := e.get(tpl.ID).Name; got != "renamed" {
		t.Fatalf("Get after the overlap = %q, want %q", got, "renamed")
	}
}
