package participant

import (
	"context"
	"strings"
	"time"
)

// Actor is who makes an admin change and through which method; the store
// writes it to the audit log in the same transaction as the change.
type Actor struct {
	Identity string
	Method   string
}

// Entity types of the audit log.
const (
	EntityCampaign = "campaign"
	EntityTemplate = "template"
	EntityStock    = "stock"
	// EntityWebhook is a webhook endpoint (internal/webhook): its creation,
	// enabling, disabling, deletion and the redeliveries asked for it.
	EntityWebhook = "webhook_endpoint"
)

// AuditEntry is one admin change.
type AuditEntry struct {
	ID         int64
	Identity   string
	Method     string
	EntityType string
	EntityID   int64
	// Before and After are the entity as JSON; Before is empty for a creation.
	Before, After string
	CreatedAt     time.Time
}

// AuditFilter narrows the audit log; zero values match everything.
type AuditFilter struct {
	EntityType   string
	EntityID     int64
	Identity     string
	Since, Until time.Time
}

// principal resolves who makes an admin change: Principal.
func (s *Service) principal(ctx context.Context, field, given, op string) (string, Actor, error) {
	return Principal(ctx, field, given, op)
}

// Principal resolves who makes an admin change. With an authenticated
// caller the named field (created_by, approved_by, updated_by, operator)
// must be empty or name the caller, and is the caller's identity; naming
// someone else is IDENTITY_MISMATCH, so nobody can approve a template by
// typing another name. Without a caller (authentication off) the field
// stands as given. op names the change when the transport did not. Changes
// kept outside the Catalog (webhook endpoints) resolve their actor with it
// too.
func Principal(ctx context.Context, field, given, op string) (string, Actor, error) {
	c, ok := CallerFrom(ctx)
	method := op
	if ok && c.Method != "" {
		method = c.Method
	}
	if !ok || c.Identity == "" {
		return given, Actor{Identity: given, Method: method}, nil
	}
	if g := strings.TrimSpace(given); g != "" && !strings.EqualFold(g, c.Identity) {
		e := Errorf(EPERMISSION, ReasonIdentityMismatch, "%s %q is not the caller %q", field, given, c.Identity)
		e.Metadata = map[string]string{"field": field}
		return "", Actor{}, e
	}
	return c.Identity, Actor{Identity: c.Identity, Method: method}, nil
}

// ListAuditLog reads the audit log, newest first.
func (s *Service) ListAuditLog(ctx context.Context, f AuditFilter, p Page) ([]AuditEntry, string, error) {
	switch f.EntityType {
	case "", EntityCampaign, EntityTemplate, EntityStock, EntityWebhook:
	default:
		return nil, "", Invalid("entity_type", "must be campaign, template, stock or webhook_endpoint")
	}
	if f.EntityID < 0 {
		return nil, "", Invalid("entity_id", "must not be negative")
	}
	if err := checkText("identity", f.Identity, false, maxPrincipalLen); err != nil {
		return nil, "", err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return nil, "", Invalid("until", "must not be before since")
	}
	p, err := checkPage(p)
	if err != nil {
		return nil, "", err
	}
	return s.catalog.ListAudit(ctx, f, p)
}
