package participant

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// Phone is a normalised E.164 phone number, e.g. +8613800138000. It prints
// and logs masked (+86138****8000); E164 gives the number itself.
type Phone string

// E164 is the number itself, for storage.
func (p Phone) E164() string { return string(p) }

// Number is the number's digits as an integer. E.164 numbers have at most
// 15 digits and no leading zero, so it is exact and one-to-one; stores
// shard on it.
func (p Phone) Number() int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(string(p), "+"), 10, 64)
	return n
}

// Masked hides the middle digits: +86138****8000.
func (p Phone) Masked() string {
	d := strings.TrimPrefix(string(p), "+")
	if len(d) < 8 {
		return "****"
	}
	head, tail := max(1, len(d)-8), 4
	if len(d)-head-tail < 4 {
		tail = 2
	}
	return "+" + d[:head] + "****" + d[len(d)-tail:]
}

// String is Masked, so that a Phone formatted into a message or log line
// never shows the whole number.
func (p Phone) String() string { return p.Masked() }

// LogValue makes slog log the masked number.
func (p Phone) LogValue() slog.Value { return slog.StringValue(p.Masked()) }

// PhoneClaimRequest asks for one coupon of a template for a phone number.
type PhoneClaimRequest struct {
	RequestID  string
	Phone      string
	TemplateID int64
}

func (s *Service) phonesReady() error {
	if s.phones == nil {
		return Errorf(EINTERNAL, ReasonInternal, "claims by phone are not configured")
	}
	return nil
}

// phoneFingerprint identifies the claim to the request-ID records in Redis,
// keeping the number itself out of Redis.
func phoneFingerprint(p Phone, templateID int64) string {
	h := sha256.Sum256([]byte(p.E164()))
	return fmt.Sprintf("phone:%s:%d", hex.EncodeToString(h[:12]), templateID)
}

// ClaimByPhone issues one coupon to a phone number. While the phone is not
// bound the coupon waits in the phone's shard with no user (UserID 0), its
// expiry fixed at claim time, and the template's per-user limit applies to
// the phone; once the phone is bound the claim is made for its user. Stock
// comes from the same counters as Claim's, and the request ID is idempotent
// in the same namespace: reusing one of Claim's IDs here is a conflict.
// Unlike Claim, every attempt looks for its coupon before it issues, so a
// retry whose marker Redis has forgotten (past RequestDoneTTL) still gets
// its coupon when the template has closed or sold out since.
func (s *Service) ClaimByPhone(ctx context.Context, r PhoneClaimRequest) (*Coupon, error) {
	p, err := r.validate()
	if err != nil {
		return nil, err
	}
	if err := s.phonesReady(); err != nil {
		return nil, err
	}
	return s.idempotent(ctx, r.RequestID, phoneFingerprint(p, r.TemplateID), r.TemplateID, true,
		func() (*Coupon, error) { return s.replayPhone(ctx, p, r) },
		func() (*Coupon, error) { return s.claimPhone(ctx, p, r) })
}

// replayPhone returns the coupon an earlier call with the same request ID
// made: pending in the phone's shard or, once moved, in its user's. A move
// copies before it deletes and binds before it copies, so a coupon missing
// from the phone's shard is in the user's. A request ID is unique per
// table, whoever's: one held by another phone or user, or for another
// template, is REQUEST_ID_CONFLICT.
func (s *Service) replayPhone(ctx context.Context, p Phone, r PhoneClaimRequest) (*Coupon, error) {
	c, err := s.phones.PendingByRequest(ctx, p, r.RequestID)
	owner := int64(0)
	if ErrorCode(err) == ENOTFOUND {
		var oerr error
		if owner, oerr = s.phones.PhoneOwner(ctx, p); oerr != nil || owner == 0 {
			return nil, oerr
		}
		c, err = s.coupons.ByRequest(ctx, owner, r.RequestID)
		if ErrorCode(err) == ENOTFOUND {
			return nil, nil
		}
	}
	if err != nil {
		return nil, err
	}
	theirs := owner == 0 && c.Phone != p || owner != 0 && c.UserID != owner
	if theirs || c.TemplateID != r.TemplateID {
		return nil, requestConflict(r.RequestID)
	}
	c.Status = c.EffectiveStatus(s.now())
	return c, nil
}

func (s *Service) claimPhone(ctx context.Context, p Phone, r PhoneClaimRequest) (*Coupon, error) {
	owner, err := s.phones.PhoneOwner(ctx, p)
	if err != nil {
		return nil, err
	}
	if owner != 0 {
		return s.issue(ctx, ClaimRequest{RequestID: r.RequestID, UserID: owner, TemplateID: r.TemplateID})
	}
	now := s.now().UTC()
	t, err := s.claimable(ctx, r.TemplateID, now)
	if err != nil {
		return nil, err
	}
	if t.PerUserLimit > 0 {
		// A cheap early refusal so that a phone at the limit takes no
		// stock; InsertPending enforces the limit exactly.
		n, err := s.phones.PendingClaimed(ctx, p, t.ID)
		if err != nil {
			return nil, err
		}
		if n >= t.PerUserLimit {
			return nil, userLimit(t)
		}
	}
	c := &Coupon{TemplateID: t.ID, CampaignID: t.CampaignID, RequestID: r.RequestID, Phone: p,
		Status: CouponAvailable, ClaimedAt: now, ExpireAt: t.ExpireAt(now)}
	err = s.mint(ctx, t, uint64(p.Number()), c, func(wctx context.Context) error {
		return s.phones.InsertPending(wctx, PendingClaim{Phone: p, Coupon: c, PerPhoneLimit: t.PerUserLimit})
	})
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, ErrDuplicateRequest):
		return nil, &issuedBefore{otherwise: requestConflict(r.RequestID)}
	case errors.Is(err, ErrPhoneBound):
		// Bound while we claimed: the claim is the user's now.
		owner, err := s.phones.PhoneOwner(ctx, p)
		if err != nil {
			return nil, err
		}
		if owner == 0 {
			return nil, Errorf(EINTERNAL, ReasonInternal, "phone %s reported bound but has no user", p)
		}
		return s.issue(ctx, ClaimRequest{RequestID: r.RequestID, UserID: owner, TemplateID: r.TemplateID})
	case ErrorReason(err) == ReasonUserLimitReached:
		return nil, userLimit(t)
	}
	return nil, err
}

// BindPhone binds the phone to the user and moves the coupons claimed by it
// to the user (see Phones for the steps). It returns the coupons this call
// moved, including those of an earlier bind that stopped half way; a repeat
// returns none. Moved coupons count towards the user's per-user limits even
// past them: a limit refuses claims, it never drops coupons claimed within
// it. A phone belongs to at most one user (another user is refused with
// PHONE_BOUND_TO_OTHER_USER); a user may bind several phones.
func (s *Service) BindPhone(ctx context.Context, userID int64, phone string) ([]*Coupon, error) {
	if err := checkID("user_id", userID); err != nil {
		return nil, err
	}
	p, err := ParsePhone(phone)
	if err != nil {
		return nil, err
	}
	if err := s.phonesReady(); err != nil {
		return nil, err
	}
	// Refuse early, before an intent is written for nothing; MarkBind
	// checks again under the phone's lock.
	owner, err := s.phones.PhoneOwner(ctx, p)
	if err != nil {
		return nil, err
	}
	if owner != 0 && owner != userID {
		return nil, boundToOther(p)
	}
	if err := s.phones.AddBindIntent(ctx, userID, p); err != nil {
		return nil, err
	}
	cs, err := s.move(ctx, userID, p)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "phone bound", "user_id", userID, "phone", p, "moved", len(cs))
	return cs, nil
}

func boundToOther(p Phone) error {
	return Errorf(EREFUSED, ReasonPhoneBoundToOtherUser, "phone %s is bound to another user", p)
}

// move runs steps 1 to 4 of a move whose intent is recorded.
func (s *Service) move(ctx context.Context, userID int64, p Phone) ([]*Coupon, error) {
	if err := s.phones.MarkBind(ctx, userID, p); err != nil {
		if ErrorReason(err) == ReasonPhoneBoundToOtherUser {
			// The intent can never be carried out: drop it so that reads
			// stop trying.
			if rerr := s.phones.RemoveBindIntent(ctx, userID, p); rerr != nil {
				return nil, rerr
			}
		}
		return nil, err
	}
	cs, err := s.phones.CopyBound(ctx, userID, p)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	if err := s.phones.DeleteBound(ctx, userID, p, ids); err != nil {
		return nil, err
	}
	if err := s.phones.RemoveBindIntent(ctx, userID, p); err != nil {
		return nil, err
	}
	s.effective(cs)
	return cs, nil
}

// finishBinds completes the user's binds that a crash left half done, so
// that reads never miss coupons in the middle of a move. With nothing to
// finish it costs one primary-key lookup. Failures are logged, not
// returned: the read still shows what the user's shard holds, and the next
// read tries again.
func (s *Service) finishBinds(ctx context.Context, userID int64) {
	if s.phones == nil {
		return
	}
	ps, err := s.phones.BindIntents(ctx, userID)
	if err != nil {
		s.log.WarnContext(ctx, "read bind intents", "user_id", userID, "err", err)
		return
	}
	for _, p := range ps {
		cs, err := s.move(ctx, userID, p)
		if err != nil {
			s.log.WarnContext(ctx, "finish phone bind", "user_id", userID, "phone", p, "err", err)
			continue
		}
		s.log.InfoContext(ctx, "unfinished phone bind finished", "user_id", userID, "phone", p, "moved", len(cs))
	}
}
