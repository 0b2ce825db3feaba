// Package participant is the coupon service's domain: campaigns, templates,
// claims and the TCC branches, with no transport or driver code. Storage
// and counters come in through the small interfaces in ports.go.
package participant

import (
	"errors"
	"log/slog"
	"time"

	"github.com/opencoupon/coupon/participant/rules"
)

// Config tunes the service. Zero values take the defaults of DefaultConfig.
type Config struct {
	// ClaimWriteTimeout bounds the time from taking stock to committing the
	// coupon. StockSettle must exceed it: a rebuild waits that long for
	// claims in flight before it counts the records.
	ClaimWriteTimeout time.Duration
	StockSettle       time.Duration
	// RequestInFlightTTL is how long a crashed claim can block its retries.
	RequestInFlightTTL time.Duration
	// RequestDoneTTL is how long Redis remembers a finished request ID; past
	// it the shard's unique key still stops duplicates.
	RequestDoneTTL time.Duration
	// MaxSubStock caps the sub-keys of one template's stock.
	MaxSubStock int32
	// SoldOutRecheck is how long a template found sold out is refused from
	// memory before Redis is asked again (a top-up on another replica is
	// seen within it).
	SoldOutRecheck time.Duration
	// TemplateRefresh bounds how stale a replica's in-memory template may
	// be: admin changes reach every replica within about this long.
	// TemplateRedisTTL bounds staleness when invalidating Redis failed.
	// Both tune the template cache (participant/tplcache), which the server
	// builds with them; they stay here, beside the other documented keys'
	// defaults, and the Service does not read them.
	TemplateRefresh  time.Duration
	TemplateRedisTTL time.Duration
	// MaxDailyUses is the risk rule: coupons one user may use per UTC day
	// across all templates; negative disables it.
	MaxDailyUses int32
	// SweepInterval is how often the expiry sweeper runs and AuditInterval
	// how often the stock audit runs; negative disables the job on this
	// replica. SweepBatch caps the coupons one sweep statement expires.
	SweepInterval time.Duration
	SweepBatch    int
	AuditInterval time.Duration
}

// DefaultConfig is what the local stack runs with.
func DefaultConfig() Config {
	return Config{
		ClaimWriteTimeout:  2 * time.Second,
		StockSettle:        3 * time.Second,
		RequestInFlightTTL: 10 * time.Second,
		RequestDoneTTL:     24 * time.Hour,
		MaxSubStock:        64,
		SoldOutRecheck:     500 * time.Millisecond,
		MaxDailyUses:       3,
		TemplateRefresh:    time.Second,
		TemplateRedisTTL:   time.Minute,
		SweepInterval:      30 * time.Second,
		SweepBatch:         500,
		AuditInterval:      time.Minute,
	}
}

func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.ClaimWriteTimeout <= 0 {
		c.ClaimWriteTimeout = d.ClaimWriteTimeout
	}
	if c.StockSettle <= 0 {
		c.StockSettle = d.StockSettle
	}
	if c.RequestInFlightTTL <= 0 {
		c.RequestInFlightTTL = d.RequestInFlightTTL
	}
	if c.RequestDoneTTL <= 0 {
		c.RequestDoneTTL = d.RequestDoneTTL
	}
	if c.MaxSubStock <= 0 {
		c.MaxSubStock = d.MaxSubStock
	}
	if c.SoldOutRecheck == 0 {
		c.SoldOutRecheck = d.SoldOutRecheck
	}
	if c.TemplateRefresh <= 0 {
		c.TemplateRefresh = d.TemplateRefresh
	}
	if c.TemplateRedisTTL <= 0 {
		c.TemplateRedisTTL = d.TemplateRedisTTL
	}
	if c.MaxDailyUses == 0 {
		c.MaxDailyUses = d.MaxDailyUses
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = d.SweepInterval
	}
	if c.SweepBatch <= 0 {
		c.SweepBatch = d.SweepBatch
	}
	if c.AuditInterval == 0 {
		c.AuditInterval = d.AuditInterval
	}
	if c.StockSettle <= c.ClaimWriteTimeout {
		return c, errors.New("config: stock settle time must exceed the claim write timeout")
	}
	return c, nil
}

// Service implements the coupon use cases.
type Service struct {
	catalog  Catalog
	coupons  Coupons
	stock    Stock
	requests Requests
	leases   Leases
	// branches runs the TCC branches; nil when the store does not support them.
	branches Branches
	// phones keeps claims by phone number; nil disables them.
	phones Phones
	rules  *rules.Cache
	// templates caches templates for the claim and TCC paths.
	templates templateCache
	ids       *IDGen
	cfg       Config
	counts    counters
	soldOut   soldOutMemo
	log       *slog.Logger
	now       func() time.Time
}

// Deps are what a Service needs.
type Deps struct {
	Catalog  Catalog
	Coupons  Coupons
	Stock    Stock
	Requests Requests
	Leases   Leases
	Branches Branches
	// Templates serves templates to the claim and TCC paths; the server
	// wires participant/tplcache over Catalog.
	Templates Templates
	// Phones is optional: without it claims by phone are refused.
	Phones Phones
	IDs    *IDGen
	Log    *slog.Logger
	// Now defaults to time.Now; tests inject a clock.
	Now func() time.Time
}

// NewService wires a Service.
func NewService(d Deps, cfg Config) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if d.Catalog == nil || d.Coupons == nil || d.Stock == nil || d.Requests == nil || d.Leases == nil ||
		d.Branches == nil || d.Templates == nil || d.IDs == nil {
		return nil, errors.New("participant: catalog, coupons, stock, requests, leases, branches, templates and ids are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &Service{
		catalog: d.Catalog, coupons: d.Coupons, stock: d.Stock, requests: d.Requests, leases: d.Leases,
		branches: d.Branches, phones: d.Phones, rules: rules.NewCache(4096), ids: d.IDs, cfg: cfg, log: d.Log, now: d.Now,
	}
	s.templates = templateCache{Templates: d.Templates, log: d.Log}
	return s, nil
}
