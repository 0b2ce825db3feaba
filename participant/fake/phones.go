package fake

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/opencoupon/coupon/participant"
)

// Phones is the fake of participant.Phones: pending coupons in their own
// table (request IDs unique in it), phone bindings and bind intents, each
// step of a move one atomic section.
type Phones struct{ db *store }

var _ participant.Phones = (*Phones)(nil)

// PhoneOwner is the user the phone is bound to, 0 when none.
func (k *Phones) PhoneOwner(_ context.Context, p participant.Phone) (int64, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phones[p], nil
}

// pendingClaimed counts the phone's pending coupons of the template. s.mu is held.
func (s *store) pendingClaimed(p participant.Phone, templateID int64) int32 {
	var n int32
	for _, pc := range s.pending {
		if pc.c.Phone == p && pc.c.TemplateID == templateID {
			n++
		}
	}
	return n
}

// PendingClaimed counts the phone's pending coupons of the template.
func (k *Phones) PendingClaimed(_ context.Context, p participant.Phone, templateID int64) (int32, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pendingClaimed(p, templateID), nil
}

// InsertPending writes the coupon for the phone: ErrPhoneBound when the
// phone is bound, USER_LIMIT_REACHED at the limit, ErrDuplicateRequest
// when the request ID exists.
func (k *Phones) InsertPending(_ context.Context, pc participant.PendingClaim) error {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phones[pc.Phone] != 0 {
		return participant.ErrPhoneBound
	}
	c := pc.Coupon
	if pc.PerPhoneLimit > 0 && s.pendingClaimed(pc.Phone, c.TemplateID) >= pc.PerPhoneLimit {
		return participant.Errorf(participant.EREFUSED, participant.ReasonUserLimitReached, "per-user limit reached")
	}
	if _, ok := s.pendingReq[c.RequestID]; ok {
		return participant.ErrDuplicateRequest
	}
	n := cloneCoupon(c)
	n.UserID, n.Phone = 0, pc.Phone
	s.pending[c.ID] = &pendingCoupon{c: n}
	s.pendingReq[c.RequestID] = c.ID
	if _, ok := s.phones[pc.Phone]; !ok {
		s.phones[pc.Phone] = 0
	}
	return nil
}

// PendingByRequest finds the pending coupon a request ID produced, whichever
// phone it is for.
func (k *Phones) PendingByRequest(_ context.Context, _ participant.Phone, requestID string) (*participant.Coupon, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.pendingReq[requestID]
	if !ok {
		return nil, notFound("pending coupon for request", requestID)
	}
	return cloneCoupon(s.pending[id].c), nil
}

// AddBindIntent records (user, phone): step 0 of a move.
func (k *Phones) AddBindIntent(_ context.Context, userID int64, p participant.Phone) error {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.intents[userID] == nil {
		s.intents[userID] = map[participant.Phone]bool{}
	}
	s.intents[userID][p] = true
	return nil
}

// MarkBind binds the phone to the user and marks its pending coupons with
// the user (step 1), or refuses with PHONE_BOUND_TO_OTHER_USER.
func (k *Phones) MarkBind(_ context.Context, userID int64, p participant.Phone) error {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	switch owner := s.phones[p]; owner {
	case userID, 0:
		s.phones[p] = userID
	default:
		return participant.Errorf(participant.EREFUSED, participant.ReasonPhoneBoundToOtherUser, "phone %s is bound to another user", p)
	}
	for _, pc := range s.pending {
		if pc.c.Phone == p && pc.bindUser == 0 {
			pc.bindUser = userID
		}
	}
	return nil
}

// CopyBound copies the coupons marked for the user into the user's coupons
// (once each, counting each copy in the user's claim count) and returns
// them as they stand there, by ascending ID (step 2). A coupon whose
// request ID another of the user's coupons holds is kept under one made
// from its own ID, as the adapter does.
func (k *Phones) CopyBound(_ context.Context, userID int64, p participant.Phone) ([]*participant.Coupon, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var marked []*participant.Coupon
	for _, pc := range s.pending {
		if pc.c.Phone == p && pc.bindUser == userID {
			marked = append(marked, pc.c)
		}
	}
	slices.SortFunc(marked, func(a, b *participant.Coupon) int { return cmp.Compare(a.ID, b.ID) })
	out := make([]*participant.Coupon, 0, len(marked))
	for _, pc := range marked {
		if have, ok := s.coupons[pc.ID]; ok {
			if have.UserID != userID {
				return nil, fmt.Errorf("coupon %d is in user %d's table under user %d", pc.ID, userID, have.UserID)
			}
			out = append(out, cloneCoupon(have))
			continue
		}
		c := cloneCoupon(pc)
		c.UserID, c.Phone = userID, ""
		if _, taken := s.byRequest[c.RequestID]; taken {
			c.RequestID = "bound:" + strconv.FormatInt(c.ID, 10)
		}
		if err := s.insert(c); err != nil {
			return nil, err
		}
		s.claimed[userTemplate{userID, c.TemplateID}]++
		out = append(out, cloneCoupon(c))
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// DeleteBound deletes the copied coupons from the phone's pending coupons (step 3).
func (k *Phones) DeleteBound(_ context.Context, userID int64, p participant.Phone, ids []int64) error {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if pc, ok := s.pending[id]; ok && pc.c.Phone == p && pc.bindUser == userID {
			delete(s.pendingReq, pc.c.RequestID)
			delete(s.pending, id)
		}
	}
	return nil
}

// RemoveBindIntent forgets the intent of step 0 (step 4).
func (k *Phones) RemoveBindIntent(_ context.Context, userID int64, p participant.Phone) error {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.intents[userID], p)
	return nil
}

// BindIntents lists the phones with an intent of the user.
func (k *Phones) BindIntents(_ context.Context, userID int64) ([]participant.Phone, error) {
	s := k.db
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []participant.Phone
	for p := range s.intents[userID] {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}
