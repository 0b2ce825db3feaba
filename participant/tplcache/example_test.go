package tplcache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/fake"
	"github.com/opencoupon/coupon/participant/tplcache"
)

// The server builds one cache per replica and hands it to the service as
// participant.Deps.Templates; here the ports are the in-memory fakes.
func Example() {
	ctx := context.Background()
	p := fake.New(fake.NewClock(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)))
	camp := &participant.Campaign{Name: "spring", Status: participant.CampaignActive}
	_, _ = p.Catalog.CreateCampaign(ctx, camp, participant.Actor{Identity: "alice"})
	tpl := &participant.Template{CampaignID: camp.ID, Name: "five off", Status: participant.TemplateActive}
	_, _ = p.Catalog.CreateTemplate(ctx, tpl, participant.Actor{Identity: "alice"})

	cache := tplcache.New(tplcache.Deps{Catalog: p.Catalog, Blobs: p.Blobs, Leases: p.Leases, Now: p.Clock.Now}, tplcache.Config{})
	for range 3 {
		t, c, err := cache.Get(ctx, tpl.ID)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(t.Name, "of", c.Name)
	}
	hits, misses := cache.Counts()
	fmt.Println("hits", hits, "misses", misses)
	// Output:
	// five off of spring
	// five off of spring
	// five off of spring
	// hits 2 misses 1
}
