package fake

import (
	"context"
	"time"

	"github.com/dtm-labs/client/dtmcli/dtmimp"

	"github.com/opencoupon/coupon/participant"
)

// Branches is the fake of participant.Branches, with DTM's barrier.
type Branches struct{ db *store }

var _ participant.Branches = (*Branches)(nil)

// originOp is the op whose barrier row a compensation inserts first.
var originOp = map[string]string{
	dtmimp.OpCancel:     dtmimp.OpTry,
	dtmimp.OpCompensate: dtmimp.OpAction,
	dtmimp.OpRollback:   dtmimp.OpAction,
}

// Apply runs a branch as the MySQL adapter does, in one atomic section: the
// barrier rows (a compensation first inserts its origin's row, and finding
// it absent is null compensation; a branch whose own row exists is skipped),
// the user's coupon, decide, and the change with its daily-use counts,
// return record and ledger rows. A refusal — no such coupon, decide's
// error, a daily limit passed, a return's request ID recorded before —
// leaves everything as it was, barrier rows included.
func (k *Branches) Apply(_ context.Context, br participant.Branch, userID int64, code string, decide participant.Decide) (participant.Outcome, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byCode(userID, code)
	if br.Op != "" {
		row := func(op string) participant.Branch {
			return participant.Branch{TransType: br.TransType, GID: br.GID, BranchID: br.BranchID, Op: op}
		}
		origin := originOp[br.Op]
		nullCompensation := origin != "" && !s.barrier[row(origin)]
		duplicate := s.barrier[row(br.Op)]
		if nullCompensation || duplicate {
			// Skipped: the barrier rows stay, the coupon as it is.
			if origin != "" {
				s.barrier[row(origin)] = true
			}
			s.barrier[row(br.Op)] = true
			if c == nil {
				return participant.Outcome{}, notFound("coupon", code)
			}
			return participant.Outcome{Coupon: cloneCoupon(c), Skipped: true}, nil
		}
		if c == nil {
			return participant.Outcome{}, notFound("coupon", code)
		}
		ch, err := decide(cloneCoupon(c))
		if err != nil {
			return participant.Outcome{}, err
		}
		if ch != nil {
			if err := s.change(br, c, ch); err != nil {
				return participant.Outcome{}, err
			}
		}
		s.barrier[row(br.Op)] = true
		return participant.Outcome{Coupon: cloneCoupon(c), Changed: ch != nil}, nil
	}
	if c == nil {
		return participant.Outcome{}, notFound("coupon", code)
	}
	ch, err := decide(cloneCoupon(c))
	if err != nil || ch == nil {
		return participant.Outcome{Coupon: cloneCoupon(c)}, err
	}
	if err := s.change(br, c, ch); err != nil {
		return participant.Outcome{}, err
	}
	return participant.Outcome{Coupon: cloneCoupon(c), Changed: true}, nil
}

// change writes ch to c, or nothing when a daily limit or the return's
// request ID refuses it. s.mu is held.
func (s *store) change(br participant.Branch, c *participant.Coupon, ch *participant.Change) error {
	at := ch.At.UTC()
	day := at.Format(time.DateOnly)
	for _, l := range ch.CountUse {
		n := s.dailyUse[dailyKey{c.UserID, day, l.TemplateID}]
		if l.Limit != 0 && n.used+1 > l.Limit {
			return participant.Errorf(participant.EABORTED, participant.ReasonDailyUseLimitReached, "daily use limit reached")
		}
	}
	if ch.Return != nil {
		if _, ok := s.returns[ch.Return.RequestID]; ok {
			return participant.ErrDuplicateRequest
		}
		s.returns[ch.Return.RequestID] = participant.ReturnRecord{
			RequestID: ch.Return.RequestID, CouponID: c.ID, UserID: c.UserID, OrderNo: ch.Return.OrderNo,
			Reason: ch.Return.Reason, CreatedAt: at,
		}
	}
	for _, l := range ch.CountUse {
		key := dailyKey{c.UserID, day, l.TemplateID}
		s.dailyUse[key] = dailyCount{used: s.dailyUse[key].used + 1, cap: l.Limit}
	}
	if ch.GiveBackUse && !c.LockedAt.IsZero() {
		locked := c.LockedAt.UTC().Format(time.DateOnly)
		for _, tpl := range []int64{0, c.TemplateID} {
			key := dailyKey{c.UserID, locked, tpl}
			if n, ok := s.dailyUse[key]; ok && n.used > 0 {
				n.used--
				s.dailyUse[key] = n
			}
		}
	}
	for _, e := range ch.Ledger {
		s.ledger = append(s.ledger, participant.LedgerEntry{
			ID: int64(len(s.ledger) + 1), Op: e.Op, OrderNo: e.OrderNo, GID: br.GID, BranchID: br.BranchID,
			CouponID: c.ID, CouponCode: c.Code, UserID: c.UserID, TemplateID: c.TemplateID, Discount: e.Discount, CreatedAt: at,
		})
	}
	c.Status, c.OrderNo, c.DiscountAmount = ch.Status, ch.OrderNo, ch.Discount
	c.LockGID, c.LockBranch, c.LockedAt, c.UsedAt = ch.GID, ch.BranchID, ch.LockedAt, ch.UsedAt
	return nil
}

// DailyUse is how many uses are counted for the user on day (UTC, as
// "2006-01-02") against the template's limit, or with template 0 against
// the all-templates limit.
func (k *Branches) DailyUse(userID int64, day string, templateID int64) int32 {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dailyUse[dailyKey{userID, day, templateID}].used
}

// Owner finds which user holds a code.
func (k *Branches) Owner(_ context.Context, code string) (int64, bool, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := participant.CodeID(code)
	if !ok {
		return 0, false, nil
	}
	if c := s.coupons[id]; c != nil && c.Code == code {
		return c.UserID, true, nil
	}
	return 0, false, nil
}

// ReturnRecord reads the return a request ID made, whoever's; nil when none.
func (k *Branches) ReturnRecord(_ context.Context, _ int64, requestID string) (*participant.ReturnRecord, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.returns[requestID]
	if !ok {
		return nil, nil
	}
	return &r, nil
}
