package participant

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// templateCache serves templates and their campaigns to the claim and TCC
// paths from memory. An entry older than the refresh interval is served
// while one background reload replaces it (stale-while-revalidate), so an
// admin change reaches every replica within about one refresh interval.
// Reloads read Redis first; on a Redis miss one replica refills it from
// MySQL under a lease while the others wait briefly, so replicas do not
// stampede the database. When Redis fails, cached entries keep serving.
//
// Neither level can be left holding a version older than a change that
// invalidated it: a reload stores its result in memory only if no
// invalidation of that template happened on this replica since it began
// (epochs), and in Redis only under the stamp it read before reading MySQL
// (Blobs). Staleness is therefore bounded by the refresh interval, or by
// the Redis TTL when an invalidation could not reach Redis.
type templateCache struct {
	catalog Catalog
	blobs   Blobs
	leases  Leases // for the fill lease
	log     interface {
		WarnContext(context.Context, string, ...any)
	}
	refresh  time.Duration
	redisTTL time.Duration
	now      func() time.Time

	mu     sync.RWMutex
	m      map[int64]*cached
	epochs map[int64]uint64 // invalidations per template on this replica

	hits, misses atomic.Int64
}

type cached struct {
	Template  *Template
	Campaign  *Campaign
	loaded    time.Time
	reloading bool
}

func (c *templateCache) key(id int64) string { return "tpl:" + strconv.FormatInt(id, 10) }

func (c *templateCache) epoch(id int64) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epochs[id]
}

// store keeps e unless the template was invalidated since epoch was read.
// c.mu is held.
func (c *templateCache) store(id int64, e *cached, epoch uint64) {
	if c.epochs[id] == epoch {
		c.m[id] = e
	}
}

// Get returns the template and its campaign. Callers must not modify them.
func (c *templateCache) Get(ctx context.Context, id int64) (*Template, *Campaign, error) {
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

// cached is the template held in memory, if any, without loading it or
// counting a hit.
func (c *templateCache) cached(id int64) *Template {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e := c.m[id]; e != nil {
		return e.Template
	}
	return nil
}

func (c *templateCache) reloadAsync(id int64) {
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
			if ErrorCode(err) == ENOTFOUND {
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
func (c *templateCache) load(ctx context.Context, id int64) (*cached, error) {
	if e, ok := c.fromRedis(ctx, id); ok {
		return e, nil
	}
	unlock, leased, err := c.leases.Lock(ctx, "tplfill:"+strconv.FormatInt(id, 10), 5*time.Second)
	if err == nil && !leased {
		// Another replica is filling Redis: wait for it a little.
		for range 10 {
			if pause(ctx, 10*time.Millisecond) != nil {
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
	stamp, serr := c.blobs.Stamp(ctx, c.key(id))
	t, err := c.catalog.GetTemplate(ctx, id)
	if err != nil {
		return nil, err
	}
	camp, err := c.catalog.GetCampaign(ctx, t.CampaignID)
	if err != nil {
		return nil, err
	}
	e := &cached{Template: t, Campaign: camp, loaded: c.now()}
	if serr != nil {
		c.log.WarnContext(ctx, "read template cache stamp", "template_id", id, "err", serr)
		return e, nil
	}
	if b, err := json.Marshal(e); err == nil {
		if _, err := c.blobs.PutBlob(ctx, c.key(id), b, c.redisTTL, stamp); err != nil {
			c.log.WarnContext(ctx, "cache template in redis", "template_id", id, "err", err)
		}
	}
	return e, nil
}

func (c *templateCache) fromRedis(ctx context.Context, id int64) (*cached, bool) {
	b, ok, err := c.blobs.GetBlob(ctx, c.key(id))
	if err != nil || !ok {
		return nil, false
	}
	var e cached
	if err := json.Unmarshal(b, &e); err != nil || e.Template == nil || e.Campaign == nil {
		return nil, false
	}
	e.loaded = c.now()
	return &e, true
}

// invalidate drops templates from this replica and from Redis, so that the
// next read here, and the next refresh elsewhere, load them from MySQL.
func (c *templateCache) invalidate(ctx context.Context, ids ...int64) {
	keys := make([]string, len(ids))
	c.mu.Lock()
	for i, id := range ids {
		delete(c.m, id)
		c.epochs[id]++
		keys[i] = c.key(id)
	}
	c.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	if err := c.blobs.DelBlobs(ctx, keys...); err != nil {
		// Other replicas then see the change when the Redis entry expires.
		c.log.WarnContext(ctx, "invalidate cached templates", "ids", fmt.Sprint(ids), "err", err)
	}
}

// invalidateCampaign drops every template of a campaign.
func (s *Service) invalidateCampaign(ctx context.Context, campaignID int64) {
	var ids []int64
	p := Page{Size: 500}
	for {
		ts, next, err := s.catalog.ListTemplates(ctx, campaignID, 0, p)
		if err != nil {
			s.log.WarnContext(ctx, "list templates to invalidate", "campaign_id", campaignID, "err", err)
			break
		}
		for _, t := range ts {
			ids = append(ids, t.ID)
		}
		if next == "" {
			break
		}
		p.After = next
	}
	s.templates.invalidate(ctx, ids...)
}

// PublicTemplate reads a template for the user side from the template
// cache: it may be up to one refresh interval stale, which is what lets it
// serve hot reads without touching MySQL. The template is the cache's own
// and must not be modified; a reload replaces it with a new one, so the
// same pointer means the same version (the transport caches its encoding
// on it).
func (s *Service) PublicTemplate(ctx context.Context, id int64) (*Template, error) {
	if err := checkID("template_id", id); err != nil {
		return nil, err
	}
	t, _, err := s.templates.Get(ctx, id)
	return t, err
}
