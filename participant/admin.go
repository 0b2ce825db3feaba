package participant

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opencoupon/coupon/participant/rules"
)

// Limits on what the admin API accepts.
const (
	MaxStock          = 1_000_000_000_000 // units in one template
	MaxOrderAmount    = 1_000_000_000_000_000
	maxValidDays      = 3650
	maxProductLines   = 64
	maxRequestIDLen   = 64
	maxNameLen        = 255
	maxTextLen        = 1024
	maxPrincipalLen   = 128
	maxCampaignType   = 64
	maxProductLineLen = 64
)

func checkText(field, v string, required bool, maxLen int) error {
	if required && strings.TrimSpace(v) == "" {
		return Invalid(field, "is required")
	}
	if len(v) > maxLen {
		return Invalid(field, "is longer than %d bytes", maxLen)
	}
	if !utf8.ValidString(v) {
		return Invalid(field, "is not valid UTF-8")
	}
	return nil
}

// CheckRequestID validates an idempotency key: 1 to 64 printable ASCII bytes.
func CheckRequestID(field, v string) error {
	if v == "" {
		return Invalid(field, "is required")
	}
	if len(v) > maxRequestIDLen {
		return Invalid(field, "is longer than %d bytes", maxRequestIDLen)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return Invalid(field, "must be printable ASCII without spaces")
		}
	}
	return nil
}

func checkID(field string, id int64) error {
	if id <= 0 {
		return Invalid(field, "must be a positive id, got %d", id)
	}
	return nil
}

func (c *Campaign) validate() error {
	if c.RequestID != "" {
		if err := CheckRequestID("request_id", c.RequestID); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"name", c.Name, true, maxNameLen},
		{"description", c.Description, false, maxTextLen},
		{"campaign_type", c.Type, false, maxCampaignType},
		{"created_by", c.CreatedBy, true, maxPrincipalLen},
	} {
		if err := checkText(f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	if c.StartTime.IsZero() {
		return Invalid("start_time", "is required")
	}
	if c.EndTime.IsZero() {
		return Invalid("end_time", "is required")
	}
	if !c.StartTime.Before(c.EndTime) {
		return Invalid("end_time", "must be after start_time")
	}
	return nil
}

// CreateCampaign validates and stores a new ACTIVE campaign.
func (s *Service) CreateCampaign(ctx context.Context, c *Campaign) (*Campaign, error) {
	c.Status = CampaignActive
	c.ApprovedBy = ""
	if err := c.validate(); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	c.CreatedAt, c.UpdatedAt = now, now
	if _, err := s.catalog.CreateCampaign(ctx, c); err != nil {
		return nil, err
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
	if ch.Status != 0 && (ch.Status < CampaignActive || ch.Status > CampaignEnded) {
		return nil, Invalid("status", "unknown campaign status %d", ch.Status)
	}
	c, err := s.catalog.UpdateCampaign(ctx, id, func(c *Campaign) error {
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
		if err := c.validate(); err != nil {
			return err
		}
		c.UpdatedAt = s.now().UTC()
		return nil
	})
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
	p, err := checkPage(p)
	if err != nil {
		return nil, "", err
	}
	return s.catalog.ListCampaigns(ctx, status, p)
}

func checkPage(p Page) (Page, error) {
	if p.Size < 0 {
		return p, Invalid("page_size", "must not be negative")
	}
	if p.Size == 0 {
		p.Size = 50
	}
	if p.Size > 500 {
		p.Size = 500
	}
	if len(p.After) > 256 {
		return p, Invalid("page_token", "is malformed")
	}
	return p, nil
}

// CheckRules validates t's money rules and usage rule as CreateTemplate
// does, storing nothing: the console checks a draft with it as the operator
// types.
func (t *Template) CheckRules() error { return t.validateRules() }

// validateRules checks the money rules of a template.
func (t *Template) validateRules() error {
	switch t.Type {
	case FixedAmount:
		if t.DiscountAmount <= 0 {
			return Invalid("discount_amount", "must be > 0 for FIXED_AMOUNT")
		}
		if t.PercentOff != 0 {
			return Invalid("percent_off", "must be 0 for FIXED_AMOUNT")
		}
		if t.MinOrderAmount > 0 && t.DiscountAmount > t.MinOrderAmount {
			return Invalid("discount_amount", "must not exceed min_order_amount (%d)", t.MinOrderAmount)
		}
	case PercentOff:
		if t.PercentOff < 1 || t.PercentOff > 100 {
			return Invalid("percent_off", "must be in 1..100, got %d", t.PercentOff)
		}
		if t.DiscountAmount != 0 {
			return Invalid("discount_amount", "must be 0 for PERCENT_OFF (use max_discount for a cap)")
		}
		if t.MaxDiscount < 0 {
			return Invalid("max_discount", "must not be negative")
		}
	default:
		return Invalid("coupon_type", "must be FIXED_AMOUNT or PERCENT_OFF")
	}
	if t.DiscountAmount > MaxOrderAmount || t.MaxDiscount > MaxOrderAmount {
		return Invalid("discount_amount", "is too large")
	}
	if t.MinOrderAmount < 0 || t.MinOrderAmount > MaxOrderAmount {
		return Invalid("min_order_amount", "must be in 0..%d", int64(MaxOrderAmount))
	}
	if len(t.ProductLines) > maxProductLines {
		return Invalid("product_lines", "has more than %d entries", maxProductLines)
	}
	for _, pl := range t.ProductLines {
		if err := checkText("product_lines", pl, true, maxProductLineLen); err != nil {
			return err
		}
	}
	if _, err := rules.Compile(t.UsageRule); err != nil {
		e := Invalid("usage_rule", "%v", err)
		e.Reason = ReasonInvalidRule
		return e
	}
	return nil
}

func (t *Template) validate(maxSub int32) error {
	if t.RequestID != "" {
		if err := CheckRequestID("request_id", t.RequestID); err != nil {
			return err
		}
	}
	if err := checkID("campaign_id", t.CampaignID); err != nil {
		return err
	}
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"name", t.Name, true, maxNameLen},
		{"description", t.Description, false, maxTextLen},
		{"logo", t.Logo, false, maxTextLen},
		{"created_by", t.CreatedBy, true, maxPrincipalLen},
	} {
		if err := checkText(f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	if err := t.validateRules(); err != nil {
		return err
	}
	if t.TotalStock < 0 || t.TotalStock > MaxStock {
		return Invalid("total_stock", "must be in 0..%d, got %d", int64(MaxStock), t.TotalStock)
	}
	if t.PerUserLimit < 0 {
		return Invalid("per_user_limit", "must not be negative (0 means no limit)")
	}
	if t.DailyUseLimit < 0 {
		return Invalid("daily_use_limit", "must not be negative (0 means no limit)")
	}
	if t.ValidFrom.IsZero() {
		return Invalid("valid_from", "is required")
	}
	if t.ValidUntil.IsZero() {
		return Invalid("valid_until", "is required")
	}
	if !t.ValidFrom.Before(t.ValidUntil) {
		return Invalid("valid_until", "must be after valid_from")
	}
	if t.ValidDaysAfterClaim < 0 || t.ValidDaysAfterClaim > maxValidDays {
		return Invalid("valid_days_after_claim", "must be in 0..%d", maxValidDays)
	}
	if t.SubStockCount < 0 || t.SubStockCount > maxSub {
		return Invalid("sub_stock_count", "must be in 0..%d", maxSub)
	}
	return nil
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
	t.ValidFrom, t.ValidUntil = t.ValidFrom.UTC(), t.ValidUntil.UTC()
	if err := t.validate(s.cfg.MaxSubStock); err != nil {
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
	if _, err := s.catalog.CreateTemplate(ctx, t); err != nil {
		return nil, err
	}
	return t, nil
}

// TemplateChange is a partial update; nil fields stay as they are.
type TemplateChange struct {
	Name, Description, Logo, UsageRule *string
	Status                             TemplateStatus
	PerUserLimit, DailyUseLimit        *int32
	DiscountAmount, MaxDiscount        *int64
	MinOrderAmount                     *int64
	PercentOff                         *int32
	ValidUntil                         time.Time
	UpdatedBy                          string
}

func (ch TemplateChange) touchesMoney() bool {
	return ch.UsageRule != nil || ch.DiscountAmount != nil || ch.MaxDiscount != nil ||
		ch.MinOrderAmount != nil || ch.PercentOff != nil
}

// UpdateTemplate applies a partial update. Money rules change only while
// the template awaits approval, so an approved template never changes what
// it gives away. ACTIVE and PAUSED move between each other; any but ENDED
// may end; ACTIVE is reached only through ApproveTemplate.
func (s *Service) UpdateTemplate(ctx context.Context, id int64, ch TemplateChange) (*Template, error) {
	if err := checkID("template_id", id); err != nil {
		return nil, err
	}
	if ch.Status != 0 && (ch.Status < TemplatePendingApproval || ch.Status > TemplateEnded) {
		return nil, Invalid("status", "unknown template status %d", ch.Status)
	}
	t, err := s.catalog.UpdateTemplate(ctx, id, func(t *Template) error {
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
		if !ch.ValidUntil.IsZero() {
			t.ValidUntil = ch.ValidUntil.UTC()
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
		if err := t.validate(s.cfg.MaxSubStock); err != nil {
			return err
		}
		t.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.templates.invalidate(ctx, id)
	return t, nil
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

// ApproveTemplate is the checker step of maker-checker: someone other than
// the creator moves a PENDING_APPROVAL template to ACTIVE, and its stock
// counters are created.
func (s *Service) ApproveTemplate(ctx context.Context, id int64, approver string) (*Template, error) {
	if err := checkID("template_id", id); err != nil {
		return nil, err
	}
	if err := checkText("approved_by", approver, true, maxPrincipalLen); err != nil {
		return nil, err
	}
	t, err := s.catalog.UpdateTemplate(ctx, id, func(t *Template) error {
		if t.Status != TemplatePendingApproval {
			return Errorf(EREFUSED, ReasonInvalidStateTransition,
				"template %d is %s, only PENDING_APPROVAL can be approved", t.ID, templateStatusName(t.Status))
		}
		if strings.EqualFold(strings.TrimSpace(approver), strings.TrimSpace(t.CreatedBy)) {
			return Errorf(EREFUSED, ReasonApproverIsCreator, "template %d was created by %s, who cannot approve it", t.ID, t.CreatedBy)
		}
		t.Status = TemplateActive
		t.ApprovedBy = approver
		t.UpdatedAt = s.now().UTC()
		return nil
	})
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
	before, err := s.catalog.GetTemplate(ctx, op.TemplateID)
	if err != nil {
		return AddStockResult{}, err
	}
	t, replayed, err := s.catalog.AddStock(ctx, op)
	if err != nil {
		return AddStockResult{}, err
	}
	res := AddStockResult{Template: t, Replayed: replayed}
	if !replayed {
		s.templates.invalidate(ctx, t.ID)
	}
	if !replayed && t.Status != TemplatePendingApproval {
		if t.SubStockCount != before.SubStockCount {
			// A new split needs fresh counters: drop the old ones and rebuild.
			if err := s.stock.Reset(ctx, t.ID, before.SubStockCount); err != nil {
				s.log.WarnContext(ctx, "reset stock counters for a new split", "template_id", t.ID, "err", err)
			}
		} else if ok, err := s.stock.Add(ctx, t.ID, t.SubStockCount, op.Amount); err != nil {
			// Counters now lag MySQL by op.Amount: fewer coupons, never more.
			// A rebuild or the stock audit restores them.
			s.log.WarnContext(ctx, "add stock to counters", "template_id", t.ID, "err", err)
		} else if !ok {
			s.log.InfoContext(ctx, "stock counters missing; next claim rebuilds them", "template_id", t.ID)
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
	if err != nil {
		return 0, Unavailable("read stock", err)
	}
	if ok {
		return n, nil
	}
	if err := s.rebuildStock(ctx, t.ID); err != nil {
		return 0, err
	}
	n, _, err = s.stock.Remaining(ctx, t.ID, t.SubStockCount)
	if err != nil {
		return 0, Unavailable("read stock", err)
	}
	return n, nil
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
	if status < 0 || status > CouponExpired {
		return nil, "", Invalid("status", "unknown coupon status %d", status)
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
