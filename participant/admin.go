package participant

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// CreateCampaign validates and stores a new ACTIVE campaign.
func (s *Service) CreateCampaign(ctx context.Context, c *Campaign) (*Campaign, error) {
	c.Status = CampaignActive
	c.ApprovedBy = ""
	by, actor, err := s.principal(ctx, "created_by", c.CreatedBy, "CreateCampaign")
	if err != nil {
		return nil, err
	}
	c.CreatedBy = by
	if err := c.validate(nil); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	c.CreatedAt, c.UpdatedAt = now, now
	asked := *c
	replayed, err := s.catalog.CreateCampaign(ctx, c, actor)
	if err != nil {
		return nil, err
	}
	if replayed && (c.Name != asked.Name || c.CreatedBy != asked.CreatedBy) {
		return nil, Errorf(EREFUSED, ReasonRequestIDConflict, "request_id %q created a different campaign", asked.RequestID)
	}
	return c, nil
}

// CampaignChange is a partial update; nil fields stay as they are.
type CampaignChange struct {
	Name, Description, Type *string
	Status                  CampaignStatus
	StartTime, EndTime      time.Time
	UpdatedBy               string
}

// UpdateCampaign applies a partial update and checks the state machine:
// ACTIVE and PAUSED move between each other, either may end, ENDED is final.
func (s *Service) UpdateCampaign(ctx context.Context, id int64, ch CampaignChange) (*Campaign, error) {
	if err := checkID("campaign_id", id); err != nil {
		return nil, err
	}
	if err := checkText("updated_by", ch.UpdatedBy, false, maxPrincipalLen); err != nil {
		return nil, err
	}
	if err := checkEnum("status", ch.Status, CampaignActive, CampaignEnded); err != nil {
		return nil, err
	}
	_, actor, err := s.principal(ctx, "updated_by", ch.UpdatedBy, "UpdateCampaign")
	if err != nil {
		return nil, err
	}
	c, err := s.catalog.UpdateCampaign(ctx, id, func(c *Campaign) error {
		stored := *c
		if ch.Name != nil {
			c.Name = *ch.Name
		}
		if ch.Description != nil {
			c.Description = *ch.Description
		}
		if ch.Type != nil {
			c.Type = *ch.Type
		}
		if !ch.StartTime.IsZero() {
			c.StartTime = ch.StartTime.UTC()
		}
		if !ch.EndTime.IsZero() {
			c.EndTime = ch.EndTime.UTC()
		}
		if ch.Status != 0 && ch.Status != c.Status {
			if c.Status == CampaignEnded {
				return Errorf(EREFUSED, ReasonInvalidStateTransition, "campaign %d has ended", c.ID)
			}
			c.Status = ch.Status
		}
		if err := c.validate(&stored); err != nil {
			return err
		}
		c.UpdatedAt = s.now().UTC()
		return nil
	}, actor)
	if err != nil {
		return nil, err
	}
	s.invalidateCampaign(ctx, id)
	return c, nil
}

// GetCampaign returns a campaign.
func (s *Service) GetCampaign(ctx context.Context, id int64) (*Campaign, error) {
	if err := checkID("campaign_id", id); err != nil {
		return nil, err
	}
	return s.catalog.GetCampaign(ctx, id)
}

// ListCampaigns lists campaigns, newest first.
func (s *Service) ListCampaigns(ctx context.Context, status CampaignStatus, p Page) ([]*Campaign, string, error) {
	if err := checkEnum("status", status, CampaignActive, CampaignEnded); err != nil {
		return nil, "", err
	}
	p, err := checkPage(p)
	if err != nil {
		return nil, "", err
	}
	return s.catalog.ListCampaigns(ctx, status, p)
}

// SubStockFor picks how many Redis sub-keys a stock of n spreads over: one
// per 10,000 units, at most max, so a hot template spreads over the cluster
// while a small one does not fragment into many nearly empty keys.
func SubStockFor(n int64, max int32) int32 {
	k := n / 10_000
	if k < 1 {
		return 1
	}
	if k > int64(max) {
		return max
	}
	return int32(k)
}

// CreateTemplate validates and stores a PENDING_APPROVAL template.
func (s *Service) CreateTemplate(ctx context.Context, t *Template) (*Template, error) {
	t.Status = TemplatePendingApproval
	t.ApprovedBy = ""
	by, actor, err := s.principal(ctx, "created_by", t.CreatedBy, "CreateTemplate")
	if err != nil {
		return nil, err
	}
	t.CreatedBy = by
	// Kept to the microsecond the catalog stores, so the template created
	// (and its audit row) is the one later reads and comparisons see.
	t.ValidFrom, t.ValidUntil = storedTime(t.ValidFrom), storedTime(t.ValidUntil)
	if err := t.validate(s.cfg.MaxSubStock, nil); err != nil {
		return nil, err
	}
	if t.SubStockCount == 0 {
		t.SubStockCount = SubStockFor(t.TotalStock, s.cfg.MaxSubStock)
	}
	if _, err := s.catalog.GetCampaign(ctx, t.CampaignID); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	t.CreatedAt, t.UpdatedAt, t.Version = now, now, 1
	asked := *t
	replayed, err := s.catalog.CreateTemplate(ctx, t, actor)
	if err != nil {
		return nil, err
	}
	if replayed && (t.CampaignID != asked.CampaignID || t.Name != asked.Name || t.TotalStock != asked.TotalStock) {
		return nil, Errorf(EREFUSED, ReasonRequestIDConflict, "request_id %q created a different template", asked.RequestID)
	}
	return t, nil
}

// storedTime is t as the catalog stores it: UTC, to the microsecond.
func storedTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// TemplateChange is a partial update; nil fields stay as they are.
type TemplateChange struct {
	Name, Description, Logo, UsageRule *string
	Status                             TemplateStatus
	PerUserLimit, DailyUseLimit        *int32
	DiscountAmount, MaxDiscount        *int64
	MinOrderAmount                     *int64
	PercentOff                         *int32
	ValidUntil                         time.Time
	Returnable                         *bool
	UpdatedBy                          string
}

func (ch TemplateChange) touchesMoney() bool {
	return ch.UsageRule != nil || ch.DiscountAmount != nil || ch.MaxDiscount != nil ||
		ch.MinOrderAmount != nil || ch.PercentOff != nil || ch.Returnable != nil
}

// UpdateTemplate applies a partial update. Money rules change only while
// the template awaits approval, so an approved template never changes what
// it gives away. ACTIVE and PAUSED move between each other; any but ENDED
// may end; ACTIVE is reached only through ApproveTemplate.
func (s *Service) UpdateTemplate(ctx context.Context, id int64, ch TemplateChange) (*Template, error) {
	if err := checkID("template_id", id); err != nil {
		return nil, err
	}
	if err := checkEnum("status", ch.Status, TemplatePendingApproval, TemplateEnded); err != nil {
		return nil, err
	}
	if err := checkText("updated_by", ch.UpdatedBy, false, maxPrincipalLen); err != nil {
		return nil, err
	}
	by, actor, err := s.principal(ctx, "updated_by", ch.UpdatedBy, "UpdateTemplate")
	if err != nil {
		return nil, err
	}
	t, err := s.catalog.UpdateTemplate(ctx, id, func(t *Template) error {
		before := *t
		if t.Status == TemplateEnded {
			return Errorf(EREFUSED, ReasonTemplateNotEditable, "template %d has ended", t.ID)
		}
		if ch.touchesMoney() && t.Status != TemplatePendingApproval {
			return Errorf(EREFUSED, ReasonTemplateNotEditable, "money rules of template %d are fixed once approved", t.ID)
		}
		set := func(dst *string, v *string) {
			if v != nil {
				*dst = *v
			}
		}
		set(&t.Name, ch.Name)
		set(&t.Description, ch.Description)
		set(&t.Logo, ch.Logo)
		set(&t.UsageRule, ch.UsageRule)
		if ch.PerUserLimit != nil {
			t.PerUserLimit = *ch.PerUserLimit
		}
		if ch.DailyUseLimit != nil {
			t.DailyUseLimit = *ch.DailyUseLimit
		}
		if ch.DiscountAmount != nil {
			t.DiscountAmount = *ch.DiscountAmount
		}
		if ch.MaxDiscount != nil {
			t.MaxDiscount = *ch.MaxDiscount
		}
		if ch.MinOrderAmount != nil {
			t.MinOrderAmount = *ch.MinOrderAmount
		}
		if ch.PercentOff != nil {
			t.PercentOff = *ch.PercentOff
		}
		if ch.Returnable != nil {
			t.Returnable = *ch.Returnable
		}
		if !ch.ValidUntil.IsZero() {
			t.ValidUntil = storedTime(ch.ValidUntil)
		}
		if ch.Status != 0 && ch.Status != t.Status {
			ok := (t.Status == TemplateActive && ch.Status == TemplatePaused) ||
				(t.Status == TemplatePaused && ch.Status == TemplateActive) ||
				ch.Status == TemplateEnded
			if !ok {
				return Errorf(EREFUSED, ReasonInvalidStateTransition,
					"template %d cannot move from %s to %s", t.ID, templateStatusName(t.Status), templateStatusName(ch.Status))
			}
			t.Status = ch.Status
		}
		if err := t.validate(s.cfg.MaxSubStock, &before); err != nil {
			return err
		}
		if len(MoneyRuleChanges(&before, t)) > 0 {
			// Maker-checker needs to know who changed what goes live: an
			// anonymous money edit could be approved by its own author.
			if strings.TrimSpace(by) == "" {
				return Invalid("updated_by", "is required to change money rules")
			}
			t.MoneyEditedBy = strings.TrimSpace(by)
		}
		t.UpdatedAt = s.now().UTC()
		return nil
	}, actor)
	if err != nil {
		return nil, err
	}
	s.templates.invalidate(ctx, id)
	return t, nil
}

// decideApproval decides an approval on the locked template: only a
// PENDING_APPROVAL template, by neither its creator nor its last money
// editor, at the version the approver reviewed.
func decideApproval(t *Template, version int64, approver string) error {
	if t.Status != TemplatePendingApproval {
		return Errorf(EREFUSED, ReasonInvalidStateTransition,
			"template %d is %s, only PENDING_APPROVAL can be approved", t.ID, templateStatusName(t.Status))
	}
	same := func(a, b string) bool { return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b)) }
	if same(approver, t.CreatedBy) {
		return Errorf(EREFUSED, ReasonApproverIsCreator, "template %d was created by %s, who cannot approve it", t.ID, t.CreatedBy)
	}
	if t.MoneyEditedBy != "" && same(approver, t.MoneyEditedBy) {
		return Errorf(EREFUSED, ReasonApproverEditedRule,
			"%s last changed the money rules of template %d and cannot approve it", t.MoneyEditedBy, t.ID)
	}
	if t.Version != version {
		e := Errorf(EREFUSED, ReasonTemplateChanged,
			"template %d is at version %d, not the version %d that was reviewed; review it again", t.ID, t.Version, version)
		e.Metadata = map[string]string{"version": strconv.FormatInt(t.Version, 10)}
		return e
	}
	return nil
}

func templateStatusName(s TemplateStatus) string {
	switch s {
	case TemplatePendingApproval:
		return "PENDING_APPROVAL"
	case TemplateActive:
		return "ACTIVE"
	case TemplatePaused:
		return "PAUSED"
	case TemplateEnded:
		return "ENDED"
	}
	return fmt.Sprintf("status(%d)", s)
}

// ApproveTemplate is the checker step of maker-checker: someone who
// neither created the template nor last changed its money rules moves it
// from PENDING_APPROVAL to ACTIVE, and its stock counters are created.
// version is the template version the approver reviewed; it is compared
// with the locked row, so an edit made after they looked is never approved
// unseen (TEMPLATE_CHANGED).
func (s *Service) ApproveTemplate(ctx context.Context, id, version int64, approver string) (*Template, error) {
	if err := checkID("template_id", id); err != nil {
		return nil, err
	}
	if version <= 0 {
		return nil, Invalid("version", "is required: the template version the approver reviewed, got %d", version)
	}
	approver, actor, err := s.principal(ctx, "approved_by", approver, "ApproveTemplate")
	if err != nil {
		return nil, err
	}
	if err := checkText("approved_by", approver, true, maxPrincipalLen); err != nil {
		return nil, err
	}
	t, err := s.catalog.UpdateTemplate(ctx, id, func(t *Template) error {
		if err := decideApproval(t, version, approver); err != nil {
			return err
		}
		t.Status = TemplateActive
		t.ApprovedBy = approver
		t.UpdatedAt = s.now().UTC()
		return nil
	}, actor)
	if err != nil {
		return nil, err
	}
	s.templates.invalidate(ctx, t.ID)
	// No claim can have taken stock before approval, so the counters start
	// at the whole stock. If this fails the first claim rebuilds them.
	if err := s.stock.Set(ctx, t.ID, t.SubStockCount, t.TotalStock); err != nil {
		s.log.WarnContext(ctx, "init stock counters after approval", "template_id", t.ID, "err", err)
	}
	return t, nil
}

// GetTemplate returns a template.
func (s *Service) GetTemplate(ctx context.Context, id int64) (*Template, error) {
	if err := checkID("template_id", id); err != nil {
		return nil, err
	}
	return s.catalog.GetTemplate(ctx, id)
}

// ListTemplates lists templates, optionally of one campaign.
func (s *Service) ListTemplates(ctx context.Context, campaignID int64, status TemplateStatus, p Page) ([]*Template, string, error) {
	if campaignID < 0 {
		return nil, "", Invalid("campaign_id", "must not be negative")
	}
	if err := checkEnum("status", status, TemplatePendingApproval, TemplateEnded); err != nil {
		return nil, "", err
	}
	p, err := checkPage(p)
	if err != nil {
		return nil, "", err
	}
	return s.catalog.ListTemplates(ctx, campaignID, status, p)
}

// AddStockResult is what AddStock reports.
type AddStockResult struct {
	Template  *Template
	Remaining int64
	Replayed  bool
}

// AddStock tops up a template's stock once per request ID.
func (s *Service) AddStock(ctx context.Context, op StockOp) (AddStockResult, error) {
	if err := CheckRequestID("request_id", op.RequestID); err != nil {
		return AddStockResult{}, err
	}
	if err := checkID("template_id", op.TemplateID); err != nil {
		return AddStockResult{}, err
	}
	if op.Amount <= 0 || op.Amount > MaxStock {
		return AddStockResult{}, Invalid("amount", "must be in 1..%d, got %d", int64(MaxStock), op.Amount)
	}
	if op.SubStockCount < 0 || op.SubStockCount > s.cfg.MaxSubStock {
		return AddStockResult{}, Invalid("sub_stock_count", "must be in 0..%d", s.cfg.MaxSubStock)
	}
	if err := checkText("operator", op.Operator, false, maxPrincipalLen); err != nil {
		return AddStockResult{}, err
	}
	by, actor, err := s.principal(ctx, "operator", op.Operator, "AddStock")
	if err != nil {
		return AddStockResult{}, err
	}
	op.Operator = by
	before, err := s.catalog.GetTemplate(ctx, op.TemplateID)
	if err != nil {
		return AddStockResult{}, err
	}
	// The counters' generation is read before the top-up commits: if a
	// rebuild replaces them after this point, it reads total stock after
	// the commit or soon enough to be counted by the next audit, and the
	// add below, stamped with the old generation, does not land on the new
	// counters (it would count the top-up twice).
	gen, haveCounters, err := s.stock.Generation(ctx, op.TemplateID)
	if err != nil {
		return AddStockResult{}, err
	}
	t, replayed, err := s.catalog.AddStock(ctx, op, func(t *Template, prev *StockOp) (bool, error) {
		return s.decideAddStock(t, op, prev)
	}, actor)
	if err != nil {
		return AddStockResult{}, err
	}
	res := AddStockResult{Template: t, Replayed: replayed}
	if !replayed {
		s.templates.invalidate(ctx, t.ID)
		s.soldOut.forget(t.ID)
	}
	if !replayed && t.Status != TemplatePendingApproval {
		switch {
		case t.SubStockCount != before.SubStockCount:
			// A new split needs fresh counters: drop the old ones and rebuild.
			if err := s.stock.Reset(ctx, t.ID, before.SubStockCount); err != nil {
				s.log.WarnContext(ctx, "reset stock counters for a new split", "template_id", t.ID, "err", err)
			}
		case !haveCounters:
			s.log.InfoContext(ctx, "stock counters missing; next claim rebuilds them", "template_id", t.ID)
		default:
			if ok, err := s.stock.Add(ctx, t.ID, t.SubStockCount, op.Amount, gen, "stock:"+op.RequestID); err != nil {
				// Counters now lag MySQL by op.Amount: fewer coupons, never
				// more. A rebuild or the stock audit restores them.
				s.log.WarnContext(ctx, "add stock to counters", "template_id", t.ID, "err", err)
			} else if !ok {
				s.log.InfoContext(ctx, "stock counters rebuilt meanwhile; the rebuild counts the top-up", "template_id", t.ID)
			}
		}
	}
	res.Remaining, err = s.remaining(ctx, t)
	if err != nil {
		return AddStockResult{}, err
	}
	return res, nil
}

// remaining reads the live stock, rebuilding the counters if they are gone.
func (s *Service) remaining(ctx context.Context, t *Template) (int64, error) {
	if t.Status == TemplatePendingApproval {
		return t.TotalStock, nil
	}
	n, ok, err := s.stock.Remaining(ctx, t.ID, t.SubStockCount)
	if err != nil || ok {
		return n, err
	}
	if err := s.rebuildStock(ctx, t.ID); err != nil {
		return 0, err
	}
	n, _, err = s.stock.Remaining(ctx, t.ID, t.SubStockCount)
	return n, err
}

// TemplateStats counts a template's coupons from the records and adds the
// live remaining stock.
func (s *Service) TemplateStats(ctx context.Context, id int64) (TemplateStats, error) {
	if err := checkID("template_id", id); err != nil {
		return TemplateStats{}, err
	}
	t, err := s.catalog.GetTemplate(ctx, id)
	if err != nil {
		return TemplateStats{}, err
	}
	st, err := s.coupons.Stats(ctx, id, s.now())
	if err != nil {
		return TemplateStats{}, err
	}
	st.TemplateID, st.TotalStock = id, t.TotalStock
	st.RemainingStock, err = s.remaining(ctx, t)
	if err != nil {
		return TemplateStats{}, err
	}
	return st, nil
}

// ListTemplateCoupons lists a template's coupons across every shard.
func (s *Service) ListTemplateCoupons(ctx context.Context, templateID int64, status CouponStatus, p Page) ([]*Coupon, string, error) {
	if err := checkID("template_id", templateID); err != nil {
		return nil, "", err
	}
	if err := checkEnum("status", status, CouponAvailable, CouponExpired); err != nil {
		return nil, "", err
	}
	p, err := checkPage(p)
	if err != nil {
		return nil, "", err
	}
	if _, err := s.catalog.GetTemplate(ctx, templateID); err != nil {
		return nil, "", err
	}
	cs, next, err := s.coupons.ListByTemplate(ctx, templateID, CouponFilter{Status: status, Now: s.now()}, p)
	if err != nil {
		return nil, "", err
	}
	s.effective(cs)
	return cs, next, nil
}

func (s *Service) effective(cs []*Coupon) {
	now := s.now()
	for _, c := range cs {
		c.Status = c.EffectiveStatus(now)
	}
}

// decideAddStock decides a top-up on the locked template: a request ID
// seen before with the same top-up is a replay (nothing to write), with
// another one a conflict; an ended template takes no stock, and the total
// stays within MaxStock.
func (s *Service) decideAddStock(t *Template, op StockOp, prev *StockOp) (bool, error) {
	if prev != nil {
		if prev.TemplateID != op.TemplateID || prev.Amount != op.Amount {
			return false, Errorf(EREFUSED, ReasonRequestIDConflict, "request_id %q added other stock", op.RequestID)
		}
		return false, nil
	}
	if t.Status == TemplateEnded {
		return false, Errorf(EREFUSED, ReasonTemplateNotActive, "template %d has ended", t.ID)
	}
	if t.TotalStock+op.Amount > MaxStock {
		return false, Invalid("amount", "total stock would exceed %d", int64(MaxStock))
	}
	t.TotalStock += op.Amount
	if op.SubStockCount > 0 {
		t.SubStockCount = op.SubStockCount
	}
	t.UpdatedAt = s.now().UTC()
	return true, nil
}
