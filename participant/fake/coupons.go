package fake

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencoupon/coupon/participant"
)

// Coupons is the fake of participant.Coupons.
type Coupons struct{ db *store }

var _ participant.Coupons = (*Coupons)(nil)

// insert writes c unless its ID or request ID is taken. s.mu is held.
func (s *store) insert(c *participant.Coupon) error {
	if _, ok := s.byRequest[c.RequestID]; ok {
		return participant.ErrDuplicateRequest
	}
	s.coupons[c.ID] = cloneCoupon(c)
	s.byRequest[c.RequestID] = c.ID
	return nil
}

// Insert counts the claim against the per-user limit and writes the coupon,
// both or neither: USER_LIMIT_REACHED at the limit (decided first, as the
// adapter does), ErrDuplicateRequest when the request ID exists.
func (k *Coupons) Insert(_ context.Context, cl participant.Claim) error {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	c := cl.Coupon
	key := userTemplate{c.UserID, c.TemplateID}
	n := s.claimed[key]
	if n > 0 && cl.PerUserLimit > 0 && n >= cl.PerUserLimit {
		return participant.Errorf(participant.EREFUSED, participant.ReasonUserLimitReached, "per-user limit reached")
	}
	if err := s.insert(c); err != nil {
		return err
	}
	s.claimed[key] = n + 1
	return nil
}

// ByRequest finds the coupon a request ID produced, whoever's it is.
func (k *Coupons) ByRequest(_ context.Context, _ int64, requestID string) (*participant.Coupon, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.byRequest[requestID]
	if !ok {
		return nil, notFound("coupon for request", requestID)
	}
	return cloneCoupon(s.coupons[id]), nil
}

// ByCode reads one of the user's coupons by code.
func (k *Coupons) ByCode(_ context.Context, userID int64, code string) (*participant.Coupon, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byCode(userID, code)
	if c == nil {
		return nil, notFound("coupon", code)
	}
	return cloneCoupon(c), nil
}

// byCode is the user's coupon with code, nil when none. s.mu is held.
func (s *store) byCode(userID int64, code string) *participant.Coupon {
	id, ok := participant.CodeID(code)
	if !ok {
		return nil
	}
	c := s.coupons[id]
	if c == nil || c.Code != code || c.UserID != userID {
		return nil
	}
	return c
}

// ByID reads one of the user's coupons by ID.
func (k *Coupons) ByID(_ context.Context, userID, id int64) (*participant.Coupon, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.coupons[id]
	if c == nil || c.UserID != userID {
		return nil, notFound("coupon", id)
	}
	return cloneCoupon(c), nil
}

// matches reports whether c passes f's status filter, by effective status.
func matches(c *participant.Coupon, f participant.CouponFilter) bool {
	if f.TemplateID > 0 && c.TemplateID != f.TemplateID {
		return false
	}
	return f.Status == 0 || c.EffectiveStatus(f.Now) == f.Status
}

// ListByUser pages through a user's coupons, newest first.
func (k *Coupons) ListByUser(_ context.Context, userID int64, f participant.CouponFilter, p participant.Page) ([]*participant.Coupon, string, error) {
	after, err := afterID(p.After)
	if err != nil {
		return nil, "", err
	}
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*participant.Coupon
	for _, c := range s.coupons {
		if c.UserID == userID && (after == 0 || c.ID < after) && matches(c, f) {
			out = append(out, cloneCoupon(c))
		}
	}
	slices.SortFunc(out, func(a, b *participant.Coupon) int { return cmp.Compare(b.ID, a.ID) })
	out, next := page(out, p, func(c *participant.Coupon) int64 { return c.ID })
	return out, next, nil
}

// ListByUserAndBinds is ListByUser and the phones of the user's bind intents.
func (k *Coupons) ListByUserAndBinds(ctx context.Context, userID int64, f participant.CouponFilter, p participant.Page) ([]*participant.Coupon, string, []participant.Phone, error) {
	cs, next, err := k.ListByUser(ctx, userID, f, p)
	if err != nil {
		return nil, "", nil, err
	}
	phones, err := (&Phones{k.db}).BindIntents(ctx, userID)
	return cs, next, phones, err
}

// ListByTemplate pages through a template's coupons by ascending ID; the
// cursor is "table:id" like the adapter's, with the one table 0.
func (k *Coupons) ListByTemplate(_ context.Context, templateID int64, f participant.CouponFilter, p participant.Page) ([]*participant.Coupon, string, error) {
	var after int64
	if p.After != "" {
		ts, is, ok := strings.Cut(p.After, ":")
		var err error
		if after, err = strconv.ParseInt(is, 10, 64); !ok || ts != "0" || err != nil || after < 0 {
			return nil, "", participant.Invalid("page_token", "is malformed")
		}
	}
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*participant.Coupon
	for _, c := range s.coupons {
		if c.TemplateID == templateID && c.ID > after && matches(c, f) {
			out = append(out, cloneCoupon(c))
		}
	}
	slices.SortFunc(out, func(a, b *participant.Coupon) int { return cmp.Compare(a.ID, b.ID) })
	if p.Size > 0 && len(out) >= p.Size {
		out = out[:p.Size]
		return out, "0:" + strconv.FormatInt(out[len(out)-1].ID, 10), nil
	}
	return out, "", nil
}

// Issued counts the template's coupons, pending phone claims included.
func (k *Coupons) Issued(_ context.Context, templateID int64) (int64, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, c := range s.coupons {
		if c.TemplateID == templateID {
			n++
		}
	}
	for _, pc := range s.pending {
		if pc.c.TemplateID == templateID {
			n++
		}
	}
	return n, nil
}

// Stats counts the template's coupons by effective status at now; pending
// phone claims are AVAILABLE until they expire.
func (k *Coupons) Stats(_ context.Context, templateID int64, now time.Time) (participant.TemplateStats, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var st participant.TemplateStats
	count := func(c *participant.Coupon) {
		if c.TemplateID != templateID {
			return
		}
		switch c.EffectiveStatus(now) {
		case participant.CouponAvailable:
			st.Available++
		case participant.CouponLocked:
			st.Locked++
		case participant.CouponUsed:
			st.Used++
		case participant.CouponExpired:
			st.Expired++
		}
		st.Issued++
	}
	for _, c := range s.coupons {
		count(c)
	}
	for _, pc := range s.pending {
		count(pc.c)
	}
	return st, nil
}

// Ledger reads the ledger rows of coupons ids, oldest first.
func (k *Coupons) Ledger(_ context.Context, _ int64, ids []int64) ([]participant.LedgerEntry, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []participant.LedgerEntry
	for _, e := range s.ledger {
		if slices.Contains(ids, e.CouponID) {
			out = append(out, e)
		}
	}
	return out, nil
}

// Expirer is the fake of participant.Expirer: one table, numbered 0.
type Expirer struct{ db *store }

var _ participant.Expirer = (*Expirer)(nil)

// ShardTables is one shard of one table.
func (k *Expirer) ShardTables() [][]int { return [][]int{{0}} }

// ExpireBatch moves up to limit AVAILABLE coupons due by now to EXPIRED,
// earliest expiry first.
func (k *Expirer) ExpireBatch(_ context.Context, table int, now time.Time, limit int) (int, error) {
	if table != 0 || limit <= 0 {
		return 0, fmt.Errorf("expire coupons: table %d or limit %d out of range", table, limit)
	}
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*participant.Coupon
	for _, c := range s.coupons {
		if c.Status == participant.CouponAvailable && !c.ExpireAt.After(now) {
			due = append(due, c)
		}
	}
	slices.SortFunc(due, func(a, b *participant.Coupon) int {
		return cmp.Or(a.ExpireAt.Compare(b.ExpireAt), cmp.Compare(a.ID, b.ID))
	})
	if len(due) > limit {
		due = due[:limit]
	}
	for _, c := range due {
		c.Status = participant.CouponExpired
	}
	return len(due), nil
}

// EndTemplates moves ACTIVE and PAUSED templates whose window closed by now
// to ENDED.
func (k *Expirer) EndTemplates(_ context.Context, now time.Time) ([]int64, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []int64
	for id, t := range s.templates {
		if (t.Status == participant.TemplateActive || t.Status == participant.TemplatePaused) && !t.ValidUntil.After(now) {
			t.Status, t.UpdatedAt = participant.TemplateEnded, now.UTC()
			t.Version++
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}
