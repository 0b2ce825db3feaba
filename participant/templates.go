package participant

import (
	"context"
	"fmt"
	"log/slog"
)

// templateCache is the Service's hold on its Templates port: the cache
// itself lives in participant/tplcache, wired by the server.
type templateCache struct {
	Templates
	log *slog.Logger
}

// invalidate drops templates from the cache after a change. Failing to
// reach the shared level does not undo the change, so it is logged and the
// change stands: other replicas see it when their shared copy expires.
func (c templateCache) invalidate(ctx context.Context, ids ...int64) {
	if err := c.Invalidate(ctx, ids...); err != nil {
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
