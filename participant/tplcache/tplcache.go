// Package tplcache is the template cache behind participant.Templates: a
// replica's memory in front of Redis blobs in front of the catalog, so the
// claim and TCC paths read templates and their campaigns without touching
// MySQL.
package tplcache

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencoupon/coupon/internal/ctxtime"
	"github.com/opencoupon/coupon/participant"
)

// Deps are what a Cache reads and coordinates through.
type Deps struct {
	Catalog participant.Catalog
	// Blobs is the shared second level.
	Blobs participant.Blobs
	// Leases keep one replica refilling Redis from MySQL.
	Leases participant.Leases
	// Log defaults to discarding.
	Log *slog.Logger
	// Now defaults to time.Now; tests inject a clock.
	Now func() time.Time
}

// Config tunes a Cache. Zero values take participant.DefaultConfig's
// TemplateRefresh and TemplateRedisTTL, the documented defaults of the
// cache.template_refresh and cache.template_redis_ttl keys.
type Config struct {
	// Refresh bounds how stale a replica's in-memory template may be.
	Refresh time.Duration
	// RedisTTL bounds staleness when invalidating Redis failed.
	RedisTTL time.Duration
}

// Cache serves templates and their campaigns to the claim and TCC paths
// from memory. An entry older than the refresh interval is served while one
// background reload replaces it (stale-while-revalidate), so an admin
// change reaches every replica within about one refresh interval. Reloads
// read Redis first; on a Redis miss one replica refills it from MySQL under
// a lease while the others wait briefly, so replicas do not stampede the
// database. When Redis fails, cached entries keep serving.
//
// Neither level can be left holding a version older than a change that
// invalidated it: a reload stores its result in memory only if no
// invalidation of that template happened on this replica since it began
// (epochs), and in Redis only under the stamp it read before reading MySQL
// (Blobs). Staleness is therefore bounded by the refresh interval, or by
// the Redis TTL when an invalidation could not reach Redis.
type Cache struct {
	catalog  participant.Catalog
	blobs    participant.Blobs
	leases   participant.Leases // for the fill lease
	log      *slog.Logger
	refresh  time.Duration
	redisTTL time.Duration
	now      func() time.Time

	mu     sync.RWMutex
	m      map[int64]*entry
	epochs map[int64]uint64 // invalidations per template on this replica

	hits, misses atomic.Int64
}

var _ participant.Templates = (*Cache)(nil)

// New returns an empty cache over d; Catalog, Blobs and Leases are required.
func New(d Deps, cfg Config) *Cache {
	def := participant.DefaultConfig()
	if cfg.Refresh <= 0 {
		cfg.Refresh = def.TemplateRefresh
	}
	if cfg.RedisTTL <= 0 {
		cfg.RedisTTL = def.TemplateRedisTTL
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Cache{
		catalog: d.Catalog, blobs: d.Blobs, leases: d.Leases, log: d.Log, now: d.Now,
		refresh: cfg.Refresh, redisTTL: cfg.RedisTTL, m: map[int64]*entry{}, epochs: map[int64]uint64{},
	}
}

// entry is one template version and its campaign. Its exported fields are
// the Redis blob's JSON, shared by every replica: renaming them orphans
// the blobs of replicas still running the old names.
type entry struct {
	Template  *participant.Template
	Campaign  *participant.Campaign
	loaded    time.Time
	reloading bool
}

func key(id int64) string { return "tpl:" + strconv.FormatInt(id, 10) }

func (c *Cache) epoch(id int64) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epochs[id]
}

// store keeps e unless the template was invalidated since epoch was read.
// c.mu is held.
func (c *Cache) store(id int64, e *entry, epoch uint64) {
	if c.epochs[id] == epoch {
		c.m[id] = e
	}
}

// Get returns the template and its campaign. Callers must not modify them.
func (c *Cache) Get(ctx context.Context, id int64) (*participant.Template, *participant.Campaign, error) {
	c.mu.RLock()
	e := c.m[id]
	c.mu.RUnlock()
	if e != nil {
		c.hits.Add(1)
		if c.now().Sub(e.loaded) >= c.refresh {
			c.reloadAsync(id)
		}
		return e.Template, e.Campaign, nil
	}
	c.misses.Add(1)
	epoch := c.epoch(id)
	e, err := c.load(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	c.store(id, e, epoch)
	c.mu.Unlock()
	return e.Template, e.Campaign, nil
}

// Cached is the template held in memory, if any, without loading it or
// counting a hit.
func (c *Cache) Cached(id int64) *participant.Template {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e := c.m[id]; e != nil {
		return e.Template
	}
	return nil
}

// Counts returns the reads served from memory (hits) and loaded from Redis
// or MySQL (misses) since the cache was made.
func (c *Cache) Counts() (hits, misses int64) { return c.hits.Load(), c.misses.Load() }

func (c *Cache) reloadAsync(id int64) {
	c.mu.Lock()
	e := c.m[id]
	if e == nil || e.reloading {
		c.mu.Unlock()
		return
	}
	e.reloading = true
	epoch := c.epochs[id]
	c.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fresh, err := c.load(ctx, id)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			if participant.ErrorCode(err) == participant.ENOTFOUND {
				delete(c.m, id)
				return
			}
			e.reloading = false // keep serving the old entry; retry on a later read
			c.log.WarnContext(ctx, "reload template", "template_id", id, "err", err)
			return
		}
		c.store(id, fresh, epoch)
	}()
}

// load reads Redis, then MySQL (refilling Redis under a lease).
func (c *Cache) load(ctx context.Context, id int64) (*entry, error) {
	if e, ok := c.fromRedis(ctx, id); ok {
		return e, nil
	}
	unlock, leased, err := c.leases.Lock(ctx, "tplfill:"+strconv.FormatInt(id, 10), 5*time.Second)
	if err == nil && !leased {
		// Another replica is filling Redis: wait for it a little.
		for range 10 {
			if ctxtime.Sleep(ctx, 10*time.Millisecond) != nil {
				break
			}
			if e, ok := c.fromRedis(ctx, id); ok {
				return e, nil
			}
		}
	}
	if leased {
		defer unlock()
	}
	// The stamp is read before MySQL: an invalidation after this point
	// renews it, and the stale result below is then not stored.
	stamp, serr := c.blobs.Stamp(ctx, key(id))
	t, err := c.catalog.GetTemplate(ctx, id)
	if err != nil {
		return nil, err
	}
	camp, err := c.catalog.GetCampaign(ctx, t.CampaignID)
	if err != nil {
		return nil, err
	}
	e := &entry{Template: t, Campaign: camp, loaded: c.now()}
	if serr != nil {
		c.log.WarnContext(ctx, "read template cache stamp", "template_id", id, "err", serr)
		return e, nil
	}
	if b, err := json.Marshal(e); err == nil {
		if _, err := c.blobs.PutBlob(ctx, key(id), b, c.redisTTL, stamp); err != nil {
			c.log.WarnContext(ctx, "cache template in redis", "template_id", id, "err", err)
		}
	}
	return e, nil
}

func (c *Cache) fromRedis(ctx context.Context, id int64) (*entry, bool) {
	b, ok, err := c.blobs.GetBlob(ctx, key(id))
	if err != nil || !ok {
		return nil, false
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil || e.Template == nil || e.Campaign == nil {
		return nil, false
	}
	e.loaded = c.now()
	return &e, true
}

// Invalidate drops templates from this replica and from Redis, so that the
// next read here, and the next refresh elsewhere, load them from MySQL. The
// memory level is always dropped; an error means Redis was not, and other
// replicas then see the change when the Redis entry expires.
func (c *Cache) Invalidate(ctx context.Context, ids ...int64) error {
	keys := make([]string, len(ids))
	c.mu.Lock()
	for i, id := range ids {
		delete(c.m, id)
		c.epochs[id]++
		keys[i] = key(id)
	}
	c.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	return c.blobs.DelBlobs(ctx, keys...)
}
