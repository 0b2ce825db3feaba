// Package fake holds in-memory implementations of the participant ports,
// for tests of the domain's decisions that need no MariaDB or Redis. Each
// fake keeps its port's written contract — the error it returns for a
// missing or duplicate record, a decide function run inside one atomic
// section, stock that never goes negative, markers and leases that expire
// by an injected clock — and nothing more: they are test doubles, not a
// second database. The adapters' own tests (participant/mysql,
// participant/redis) keep the real stores honest.
//
// The durable ports (Catalog, Coupons, Branches, Phones, Expirer) share one
// store, as the MySQL adapter's share the databases; it has a single coupon
// table, so a request ID is unique across all users (the adapter's unique
// key is per table, "whoever's").
package fake

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/tplcache"
)

// Clock is a settable clock for the fakes and the service under test.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Ports are the fakes of every port, the durable ones over one store.
type Ports struct {
	Clock    *Clock
	Catalog  *Catalog
	Coupons  *Coupons
	Branches *Branches
	Phones   *Phones
	Expirer  *Expirer
	Stock    *Stock
	Requests *Requests
	Leases   *Leases
	Blobs    *Blobs
}

// New returns fakes of every port whose times come from clock.
func New(clock *Clock) *Ports {
	db := newStore(clock.Now)
	return &Ports{
		Clock:    clock,
		Catalog:  &Catalog{db},
		Coupons:  &Coupons{db},
		Branches: &Branches{db},
		Phones:   &Phones{db},
		Expirer:  &Expirer{db},
		Stock:    NewStock(),
		Requests: NewRequests(clock.Now),
		Leases:   NewLeases(clock.Now),
		Blobs:    NewBlobs(clock.Now),
	}
}

// Deps are the service's dependencies over the fakes, with ids for the
// coupon IDs and the fakes' clock as the service's. Each call makes a new
// template cache (participant/tplcache, the real one, over the fake
// catalog, blobs and leases, with the default refresh), as each replica
// has its own.
func (p *Ports) Deps(ids *participant.IDGen) participant.Deps {
	templates := tplcache.New(tplcache.Deps{Catalog: p.Catalog, Blobs: p.Blobs, Leases: p.Leases, Now: p.Clock.Now}, tplcache.Config{})
	return participant.Deps{
		Catalog: p.Catalog, Coupons: p.Coupons, Stock: p.Stock, Requests: p.Requests, Leases: p.Leases,
		Branches: p.Branches, Templates: templates, Phones: p.Phones, IDs: ids, Now: p.Clock.Now,
	}
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func notFound(what string, id any) error {
	return participant.Errorf(participant.ENOTFOUND, participant.ReasonNotFound, "%s %v not found", what, id)
}
