package fake

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/opencoupon/coupon/participant"
)

// store is the fakes' durable state. One mutex makes every method one
// atomic section, as a transaction is for the MySQL adapter; a decide or
// update function runs while it is held.
type store struct {
	mu  sync.Mutex
	now func() time.Time

	// main database
	campaigns map[int64]*participant.Campaign
	templates map[int64]*participant.Template
	stockOps  map[string]participant.StockOp
	audit     []participant.AuditEntry
	lastID    int64

	// shards
	coupons    map[int64]*participant.Coupon // by ID
	byRequest  map[string]int64              // coupon ID by request ID
	claimed    map[userTemplate]int32
	dailyUse   map[dailyKey]dailyCount
	returns    map[string]participant.ReturnRecord
	ledger     []participant.LedgerEntry
	barrier    map[participant.Branch]bool // Op of the key is the barrier row's op
	phones     map[participant.Phone]int64 // phone -> user bound to (0: none)
	pending    map[int64]*pendingCoupon
	pendingReq map[string]int64
	intents    map[int64]map[participant.Phone]bool
}

type userTemplate struct{ user, template int64 }

type dailyKey struct {
	user     int64
	day      string
	template int64
}

type dailyCount struct{ used, cap int32 }

type pendingCoupon struct {
	c        *participant.Coupon
	bindUser int64
}

func newStore(now func() time.Time) *store {
	return &store{
		now: now, campaigns: map[int64]*participant.Campaign{}, templates: map[int64]*participant.Template{},
		stockOps: map[string]participant.StockOp{}, coupons: map[int64]*participant.Coupon{}, byRequest: map[string]int64{},
		claimed: map[userTemplate]int32{}, dailyUse: map[dailyKey]dailyCount{}, returns: map[string]participant.ReturnRecord{},
		barrier: map[participant.Branch]bool{}, phones: map[participant.Phone]int64{}, pending: map[int64]*pendingCoupon{},
		pendingReq: map[string]int64{}, intents: map[int64]map[participant.Phone]bool{},
	}
}

func (s *store) nextID() int64 {
	s.lastID++
	return s.lastID
}

func cloneCampaign(c *participant.Campaign) *participant.Campaign {
	n := *c
	return &n
}

func cloneTemplate(t *participant.Template) *participant.Template {
	n := *t
	n.ProductLines = slices.Clone(t.ProductLines)
	return &n
}

func cloneCoupon(c *participant.Coupon) *participant.Coupon {
	n := *c
	return &n
}

// afterID reads a page cursor the way the MySQL adapter writes it.
func afterID(token string) (int64, error) {
	if token == "" {
		return 0, nil
	}
	id, err := strconv.ParseInt(token, 10, 64)
	if err != nil || id <= 0 {
		return 0, participant.Invalid("page_token", "is malformed")
	}
	return id, nil
}

// page cuts items, sorted newest (highest ID) first and already past the
// cursor, to p.Size and returns the next cursor.
func page[T any](items []T, p participant.Page, id func(T) int64) ([]T, string) {
	if p.Size <= 0 || len(items) <= p.Size {
		return items, ""
	}
	items = items[:p.Size]
	return items, strconv.FormatInt(id(items[len(items)-1]), 10)
}

// Catalog is the fake of participant.Catalog.
type Catalog struct{ db *store }

var _ participant.Catalog = (*Catalog)(nil)

func (s *store) writeAudit(actor participant.Actor, entity string, id int64, before, after any, at time.Time) {
	var b []byte
	if before != nil {
		b, _ = json.Marshal(before)
	}
	a, _ := json.Marshal(after)
	identity := actor.Identity
	if identity == "" {
		identity = "anonymous"
	}
	s.audit = append(s.audit, participant.AuditEntry{
		ID: int64(len(s.audit) + 1), Identity: identity, Method: actor.Method, EntityType: entity, EntityID: id,
		Before: string(b), After: string(a), CreatedAt: at.UTC(),
	})
}

// CreateCampaign stores c, or returns the campaign of an earlier call with
// the same request ID.
func (k *Catalog) CreateCampaign(_ context.Context, c *participant.Campaign, actor participant.Actor) (bool, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.RequestID != "" {
		for _, prev := range s.campaigns {
			if prev.RequestID == c.RequestID {
				*c = *cloneCampaign(prev)
				return true, nil
			}
		}
	}
	c.ID = s.nextID()
	s.campaigns[c.ID] = cloneCampaign(c)
	s.writeAudit(actor, participant.EntityCampaign, c.ID, nil, c, c.CreatedAt)
	return false, nil
}

// UpdateCampaign applies fn to the campaign; nothing is written when fn fails.
func (k *Catalog) UpdateCampaign(_ context.Context, id int64, fn func(*participant.Campaign) error, actor participant.Actor) (*participant.Campaign, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.campaigns[id]
	if !ok {
		return nil, notFound("campaign", id)
	}
	c := cloneCampaign(cur)
	if err := fn(c); err != nil {
		return nil, err
	}
	s.campaigns[id] = cloneCampaign(c)
	s.writeAudit(actor, participant.EntityCampaign, id, cur, c, c.UpdatedAt)
	return c, nil
}

// GetCampaign reads one campaign.
func (k *Catalog) GetCampaign(_ context.Context, id int64) (*participant.Campaign, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.campaigns[id]
	if !ok {
		return nil, notFound("campaign", id)
	}
	return cloneCampaign(c), nil
}

// ListCampaigns pages through campaigns by descending ID.
func (k *Catalog) ListCampaigns(_ context.Context, status participant.CampaignStatus, p participant.Page) ([]*participant.Campaign, string, error) {
	after, err := afterID(p.After)
	if err != nil {
		return nil, "", err
	}
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*participant.Campaign
	for _, c := range s.campaigns {
		if (after == 0 || c.ID < after) && (status == 0 || c.Status == status) {
			out = append(out, cloneCampaign(c))
		}
	}
	slices.SortFunc(out, func(a, b *participant.Campaign) int { return cmp.Compare(b.ID, a.ID) })
	out, next := page(out, p, func(c *participant.Campaign) int64 { return c.ID })
	return out, next, nil
}

// CreateTemplate stores t, or returns the template of an earlier call with
// the same request ID.
func (k *Catalog) CreateTemplate(_ context.Context, t *participant.Template, actor participant.Actor) (bool, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.RequestID != "" {
		for _, prev := range s.templates {
			if prev.RequestID == t.RequestID {
				*t = *cloneTemplate(prev)
				return true, nil
			}
		}
	}
	t.ID = s.nextID()
	s.templates[t.ID] = cloneTemplate(t)
	s.writeAudit(actor, participant.EntityTemplate, t.ID, nil, t, t.CreatedAt)
	return false, nil
}

// UpdateTemplate applies fn to the template and bumps its version; nothing
// is written when fn fails.
func (k *Catalog) UpdateTemplate(_ context.Context, id int64, fn func(*participant.Template) error, actor participant.Actor) (*participant.Template, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.templates[id]
	if !ok {
		return nil, notFound("template", id)
	}
	t := cloneTemplate(cur)
	if err := fn(t); err != nil {
		return nil, err
	}
	t.Version = cur.Version + 1
	s.templates[id] = cloneTemplate(t)
	s.writeAudit(actor, participant.EntityTemplate, id, cur, t, t.UpdatedAt)
	return t, nil
}

// GetTemplate reads one template.
func (k *Catalog) GetTemplate(_ context.Context, id int64) (*participant.Template, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.templates[id]
	if !ok {
		return nil, notFound("template", id)
	}
	return cloneTemplate(t), nil
}

// ListTemplates pages through templates by descending ID.
func (k *Catalog) ListTemplates(_ context.Context, campaignID int64, status participant.TemplateStatus, p participant.Page) ([]*participant.Template, string, error) {
	after, err := afterID(p.After)
	if err != nil {
		return nil, "", err
	}
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*participant.Template
	for _, t := range s.templates {
		if (after == 0 || t.ID < after) && (campaignID == 0 || t.CampaignID == campaignID) && (status == 0 || t.Status == status) {
			out = append(out, cloneTemplate(t))
		}
	}
	slices.SortFunc(out, func(a, b *participant.Template) int { return cmp.Compare(b.ID, a.ID) })
	out, next := page(out, p, func(t *participant.Template) int64 { return t.ID })
	return out, next, nil
}

// AddStock asks decide about op with the earlier top-up of its request ID;
// when decide applies it, the top-up is recorded and the template written
// with a new version.
func (k *Catalog) AddStock(_ context.Context, op participant.StockOp, decide func(*participant.Template, *participant.StockOp) (bool, error), actor participant.Actor) (*participant.Template, bool, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.templates[op.TemplateID]
	if !ok {
		return nil, false, notFound("template", op.TemplateID)
	}
	t := cloneTemplate(cur)
	var prev *participant.StockOp
	if p, ok := s.stockOps[op.RequestID]; ok {
		prev = &p
	}
	apply, err := decide(t, prev)
	if err != nil {
		return nil, false, err
	}
	if !apply {
		return t, true, nil
	}
	s.stockOps[op.RequestID] = op
	t.Version = cur.Version + 1
	s.templates[t.ID] = cloneTemplate(t)
	type stockState struct {
		TotalStock    int64
		SubStockCount int32
		RequestID     string `json:",omitempty"`
		Added         int64  `json:",omitempty"`
	}
	s.writeAudit(actor, participant.EntityStock, t.ID,
		&stockState{TotalStock: cur.TotalStock, SubStockCount: cur.SubStockCount},
		&stockState{TotalStock: t.TotalStock, SubStockCount: t.SubStockCount, RequestID: op.RequestID, Added: op.Amount}, t.UpdatedAt)
	return t, false, nil
}

// ListAudit pages through the audit log, newest first.
func (k *Catalog) ListAudit(_ context.Context, f participant.AuditFilter, p participant.Page) ([]participant.AuditEntry, string, error) {
	after, err := afterID(p.After)
	if err != nil {
		return nil, "", err
	}
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []participant.AuditEntry
	for i := len(s.audit) - 1; i >= 0; i-- {
		e := s.audit[i]
		switch {
		case after != 0 && e.ID >= after,
			f.EntityType != "" && e.EntityType != f.EntityType,
			f.EntityID != 0 && e.EntityID != f.EntityID,
			f.Identity != "" && e.Identity != f.Identity,
			!f.Since.IsZero() && e.CreatedAt.Before(f.Since),
			!f.Until.IsZero() && !e.CreatedAt.Before(f.Until):
			continue
		}
		out = append(out, e)
	}
	out, next := page(out, p, func(e participant.AuditEntry) int64 { return e.ID })
	return out, next, nil
}
