package participant

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/opencoupon/coupon/internal/ctxtime"
)

// ClaimRequest asks for one coupon of a template for a user.
type ClaimRequest struct {
	RequestID  string
	UserID     int64
	TemplateID int64
}

func (r ClaimRequest) fingerprint() string { return fmt.Sprintf("%d:%d", r.UserID, r.TemplateID) }

func requestConflict(id string) error {
	return Errorf(EREFUSED, ReasonRequestIDConflict, "request_id %q was used for a different claim", id)
}

// Claim issues one coupon. It is idempotent on the request ID: a retry gets
// the coupon of the first success, and the same ID with other parameters is
// refused with REQUEST_ID_CONFLICT. Stock is taken atomically in Redis and
// given back when the record is definitely not written.
//
// Read top to bottom, a claim is: validate (here) → mark the request ID
// (markRequest) → answer from the durable record if the request may
// already have been issued (answer, the one place that looks) → take stock
// and write (issue, mint) → answer.
func (s *Service) Claim(ctx context.Context, r ClaimRequest) (*Coupon, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	return s.idempotent(ctx, r.RequestID, r.fingerprint(), r.TemplateID, false,
		func() (*Coupon, error) { return s.replay(ctx, r) },
		func() (*Coupon, error) { return s.issue(ctx, r) })
}

// mark is what a call learned when it marked its request ID.
type mark struct {
	tok string // the marker the call holds; "" when it holds none
	// maybeIssued: an earlier attempt may have written the coupon (its
	// commit's outcome unknown, its marker taken over, or its marker lost
	// with Redis's data), so the durable record answers before anything
	// may refuse.
	maybeIssued bool
	// soldOut: the template is known sold out and the request ID unmarked,
	// so the call is refused from memory, holding no marker.
	soldOut bool
	// inFlight: another call with the same claim holds the mark and is
	// running; this call holds none and waits for that call's coupon.
	inFlight bool
}

// errInFlight is answer's word that the call holding the mark has not
// written its coupon yet: idempotent waits and marks again.
var errInFlight = errors.New("same request in flight")

// issuedBefore is a write's answer that an earlier attempt may have issued
// this request's coupon: its request ID is taken, or the per-user limit,
// which counts that coupon, refused it. The durable record answers; when it
// holds nothing of this request the claim fails with otherwise.
type issuedBefore struct{ otherwise error }

func (e *issuedBefore) Error() string { return e.otherwise.Error() }

// idempotent runs issue once per request ID: mark the ID, answer from the
// durable record if the request may already have been issued, issue, and
// leave the mark as the outcome says (see Requests). lookFirst makes every
// attempt look in the record before it issues (phone claims; see
// ClaimByPhone).
func (s *Service) idempotent(ctx context.Context, requestID, fp string, templateID int64, lookFirst bool, replay, issue func() (*Coupon, error)) (*Coupon, error) {
	for {
		m, err := s.markRequest(ctx, requestID, fp, templateID)
		if err != nil {
			return nil, err
		}
		c, err := answer(m, templateID, lookFirst, replay, issue)
		if errors.Is(err, errInFlight) {
			if err := ctxtime.Sleep(ctx, 5*time.Millisecond); err != nil {
				return nil, Unavailable("wait for the same request in flight", err)
			}
			continue
		}
		if err != nil {
			s.settle(ctx, requestID, fp, m, err)
			return nil, err
		}
		c.Status = c.EffectiveStatus(s.now())
		return c, nil
	}
}

// answer is the one place where a claim looks for the coupon an earlier
// attempt with its request ID made, and it looks before every refusal that
// such a coupon would make wrong: while another call with the ID is in
// flight, when the request may already have been issued, and when the
// write finds the ID taken or the per-user limit reached (issuedBefore).
// Otherwise it refuses a template known sold out, or issues.
func answer(m mark, templateID int64, lookFirst bool, replay, issue func() (*Coupon, error)) (*Coupon, error) {
	if m.inFlight {
		if c, err := replay(); c != nil || err != nil {
			return c, err
		}
		return nil, errInFlight
	}
	if m.maybeIssued {
		if c, err := replay(); c != nil || err != nil {
			return c, err
		}
	}
	if m.soldOut {
		return nil, soldOut(templateID)
	}
	if lookFirst && !m.maybeIssued {
		if c, err := replay(); c != nil || err != nil {
			return c, err
		}
	}
	c, err := issue()
	var before *issuedBefore
	if errors.As(err, &before) {
		if c, rerr := replay(); c != nil || rerr != nil {
			return c, rerr
		}
		return nil, before.otherwise
	}
	return c, err
}

// markRequest marks the request ID for the call. A call that finds it
// marked by another claim is refused with REQUEST_ID_CONFLICT; one that
// finds it marked by the same claim is in flight behind it (answer waits
// for that call's coupon), or takes the mark over, as maybe issued, when
// the call holding it ended maybe issued or died in flight. A template
// known to be sold out is answered from memory after only a look at the
// mark, unless the ID is marked or its mark may have been lost.
func (s *Service) markRequest(ctx context.Context, requestID, fp string, templateID int64) (mark, error) {
	if s.soldOut.known(templateID, s.now()) {
		held, since, err := s.requests.Peek(ctx, requestID)
		if err != nil {
			return mark{}, err
		}
		if held == nil {
			return mark{soldOut: true, maybeIssued: s.mayHaveLost(since, templateID)}, nil
		}
		// Marked: the claim may have succeeded before; answer as usual.
	}
	for {
		tok, started, held, since, err := s.requests.Begin(ctx, requestID, fp, s.cfg.RequestDoneTTL)
		if err != nil {
			return mark{}, err
		}
		if started {
			return mark{tok: tok, maybeIssued: s.mayHaveLost(since, templateID)}, nil
		}
		if held.FP != fp {
			return mark{}, requestConflict(requestID)
		}
		if !held.MaybeIssued && s.now().Sub(held.Started) <= s.cfg.RequestInFlightTTL {
			return mark{inFlight: true}, nil
		}
		// The call holding it ended without knowing whether it wrote, or
		// is long gone: its coupon may yet appear, so the taker looks
		// again before any refusal.
		tok, ok, err := s.requests.TakeOver(ctx, requestID, held, fp, s.cfg.RequestDoneTTL)
		if err != nil {
			return mark{}, err
		}
		if ok {
			return mark{tok: tok, maybeIssued: true}, nil
		}
	}
}

// settle leaves the mark of a call that failed. A request definitely
// without a coupon — refused and never maybe issued, or its ID found to be
// another claim's (the unique key leaves it no room) — has its mark
// dropped so that a retry starts afresh. Any other failure (a commit of
// unknown outcome above all) leaves it marked as maybe issued, so that
// every later attempt, including one that takes it over, looks for the
// coupon before refusing. A mark that cannot be updated stays as it is and
// is taken over, as maybe issued, after the in-flight TTL.
func (s *Service) settle(ctx context.Context, requestID, fp string, m mark, err error) {
	if m.tok == "" {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if ErrorReason(err) == ReasonRequestIDConflict || !m.maybeIssued && definitelyNotIssued(err) {
		if ferr := s.requests.Forget(ctx, requestID, fp, m.tok); ferr != nil {
			s.log.WarnContext(ctx, "forget request", "request_id", requestID, "err", ferr)
		}
		return
	}
	if merr := s.requests.MaybeIssued(ctx, requestID, fp, m.tok); merr != nil {
		s.log.WarnContext(ctx, "mark request maybe issued", "request_id", requestID, "err", merr)
	}
}

// definitelyNotIssued reports whether a claim that failed with err surely
// wrote no coupon: it was refused or its input was bad. Transient and
// internal failures may have come after a write.
func definitelyNotIssued(err error) bool {
	switch ErrorCode(err) {
	case EREFUSED, EINVALID, ENOTFOUND:
		return true
	}
	return false
}

// mayHaveLost reports whether a request ID for the template, found unmarked
// in a bucket that began holding markers at since, could have been marked
// before and lost with Redis's data within the marker TTL. No coupon of a
// template created after the bucket's birth can be older than the bucket,
// so such a template's refusals need no replay read (sold-out storms hit
// new templates); bornSkew allows for the clocks of the replicas that
// stamped the two times.
func (s *Service) mayHaveLost(since time.Time, templateID int64) bool {
	if s.now().Sub(since) >= s.cfg.RequestDoneTTL {
		return false
	}
	t := s.templates.Cached(templateID)
	return t == nil || !t.CreatedAt.After(since.Add(bornSkew))
}

// bornSkew bounds the disagreement of two replicas' clocks.
const bornSkew = 10 * time.Second

// replay returns the coupon an earlier call with the same request ID made.
// A request ID is unique per coupon table, whoever's: one held by another
// user or for another template is REQUEST_ID_CONFLICT.
func (s *Service) replay(ctx context.Context, r ClaimRequest) (*Coupon, error) {
	c, err := s.coupons.ByRequest(ctx, r.UserID, r.RequestID)
	if err != nil {
		if ErrorCode(err) == ENOTFOUND {
			return nil, nil
		}
		return nil, err
	}
	if c.UserID != r.UserID || c.TemplateID != r.TemplateID {
		return nil, requestConflict(r.RequestID)
	}
	c.Status = c.EffectiveStatus(s.now())
	return c, nil
}

// wall reads the wall clock. The domain decides on its own clock, s.now
// (validity windows, expiry, the request marks' TTLs); wall is only for
// what Go's timers and context deadlines measure: how long a write may
// take after its stock was taken, how long to retry or wait.
func wall() time.Time { return time.Now() }

// issue checks the template and campaign, takes a unit of stock and writes
// the coupon. A request ID written before surfaces at the insert as
// ErrDuplicateRequest, and — since the per-user limit counts that coupon
// and is decided first — possibly as USER_LIMIT_REACHED: both are
// issuedBefore, for answer to look for the earlier coupon (the read is on
// the shard just written to). A key taken by a holder that is not readable
// is still never a retryable answer, since a retry would hit the same key.
func (s *Service) issue(ctx context.Context, r ClaimRequest) (*Coupon, error) {
	// MySQL keeps microseconds: the first answer must equal its replays.
	now := s.now().UTC().Truncate(time.Microsecond)
	t, err := s.claimable(ctx, r.TemplateID, now)
	if err != nil {
		return nil, err
	}
	c := &Coupon{TemplateID: t.ID, CampaignID: t.CampaignID, UserID: r.UserID, RequestID: r.RequestID,
		Status: CouponAvailable, ClaimedAt: now, ExpireAt: t.ExpireAt(now)}
	err = s.mint(ctx, t, uint64(r.UserID), c, func(wctx context.Context) error {
		return s.coupons.Insert(wctx, Claim{Coupon: c, PerUserLimit: t.PerUserLimit})
	})
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, ErrDuplicateRequest):
		return nil, &issuedBefore{otherwise: requestConflict(r.RequestID)}
	case ErrorReason(err) == ReasonUserLimitReached:
		return nil, &issuedBefore{otherwise: userLimit(t)}
	}
	return nil, err
}

// mint is the one sequence by which a coupon comes to exist: take a unit of
// t's stock, give c an ID and code, write it with write — bounded by
// ClaimWriteTimeout from the moment the unit was asked for, which is what
// lets a counter rebuild wait for every claim that took from the old
// counters — and give the unit back when the coupon is definitely not
// written. When the write's outcome is unknown the unit stays taken (the
// record may exist; a retry with the same request ID finds it) and the
// answer is Unavailable. Otherwise it returns write's error for the caller
// to interpret.
func (s *Service) mint(ctx context.Context, t *Template, hint uint64, c *Coupon, write func(context.Context) error) error {
	ticket, takenAt, err := s.take(ctx, t, hint)
	if err != nil {
		return err
	}
	c.ID = s.ids.Next()
	c.Code = CouponCode(c.ID)
	wctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), takenAt.Add(s.cfg.ClaimWriteTimeout))
	defer cancel()
	err = write(wctx)
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrCommitUnknown) {
		s.log.WarnContext(ctx, "claim commit outcome unknown; stock left taken", "request_id", c.RequestID, "template_id", t.ID, "err", err)
		return Unavailable("write coupon", err)
	}
	s.giveBack(ctx, ticket)
	return err
}

// giveBack returns a unit whose coupon was definitely not written. A Give
// is idempotent (once per ticket), so one that fails is retried in the
// background for a while rather than leaving the counters short until the
// stock audit; only when Redis stays unreachable is the unit left to it.
func (s *Service) giveBack(ctx context.Context, t Ticket) {
	ctx = context.WithoutCancel(ctx)
	if err := s.stock.Give(ctx, t); err == nil {
		return
	}
	go func() {
		deadline := wall().Add(30 * time.Second)
		for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
			if ctxtime.Sleep(ctx, wait) != nil {
				return
			}
			err := s.stock.Give(ctx, t)
			if err == nil {
				return
			}
			if wall().After(deadline) {
				s.log.WarnContext(ctx, "give stock back; the stock audit will restore it", "template_id", t.TemplateID, "err", err)
				return
			}
		}
	}()
}

// claimable reads the template (from the template cache) and refuses it
// unless it and its campaign are open for claims at now.
func (s *Service) claimable(ctx context.Context, id int64, now time.Time) (*Template, error) {
	t, camp, err := s.templates.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.Status != TemplateActive || now.Before(t.ValidFrom) || !now.Before(t.ValidUntil) {
		return nil, Errorf(EREFUSED, ReasonTemplateNotActive, "template %d is not open for claims", t.ID)
	}
	if !camp.Open(now) {
		return nil, Errorf(EREFUSED, ReasonCampaignNotActive, "campaign %d is not running", camp.ID)
	}
	return t, nil
}

func soldOut(templateID int64) error {
	return Errorf(EREFUSED, ReasonSoldOut, "template %d is sold out", templateID)
}

func userLimit(t *Template) error {
	return Errorf(EREFUSED, ReasonUserLimitReached, "per-user limit of %d reached for template %d", t.PerUserLimit, t.ID)
}

// take takes one unit of stock, rebuilding lost counters first. takenAt is
// the wall-clock time just before the Take that succeeded was sent: the
// unit left the counters no earlier.
func (s *Service) take(ctx context.Context, t *Template, hint uint64) (tk Ticket, takenAt time.Time, err error) {
	for range 3 {
		takenAt = wall()
		tk, err := s.stock.Take(ctx, t.ID, t.SubStockCount, hint)
		switch {
		case err == nil:
			return tk, takenAt, nil
		case errors.Is(err, ErrSoldOut):
			s.soldOut.mark(t.ID, s.now().Add(s.cfg.SoldOutRecheck))
			return Ticket{}, takenAt, soldOut(t.ID)
		case errors.Is(err, ErrStockMissing):
			if err := s.rebuildStock(ctx, t.ID); err != nil {
				return Ticket{}, takenAt, err
			}
		default:
			return Ticket{}, takenAt, err
		}
	}
	return Ticket{}, takenAt, Errorf(EUNAVAILABLE, ReasonUnavailable, "stock counters of template %d keep vanishing", t.ID)
}

// rebuildStock recreates a template's counters from MySQL: remaining =
// total − issued. One replica rebuilds under a lease while the others wait.
// It first drops every sub-key so that no claim takes from a survivor, then
// waits StockSettle so that claims which took stock before the loss have
// committed (their writes are bounded by ClaimWriteTimeout) and are counted.
func (s *Service) rebuildStock(ctx context.Context, templateID int64) error {
	t, err := s.catalog.GetTemplate(ctx, templateID)
	if err != nil {
		return err
	}
	unlock, ok, err := s.leases.Lock(ctx, fmt.Sprintf("rebuild:%d", t.ID), s.cfg.StockSettle+time.Minute)
	if err != nil {
		return err
	}
	if !ok {
		return s.awaitStock(ctx, t)
	}
	defer unlock()
	if _, ok, err := s.stock.Remaining(ctx, t.ID, t.SubStockCount); err != nil {
		return Unavailable("read stock", err)
	} else if ok {
		return nil // another replica finished a rebuild just now
	}
	if err := s.stock.Reset(ctx, t.ID, t.SubStockCount); err != nil {
		return Unavailable("reset stock", err)
	}
	if err := ctxtime.Sleep(ctx, s.cfg.StockSettle); err != nil {
		return Unavailable("settle before stock rebuild", err)
	}
	// Re-read: stock may have been added while we waited.
	if t, err = s.catalog.GetTemplate(ctx, templateID); err != nil {
		return err
	}
	issued, err := s.coupons.Issued(ctx, t.ID)
	if err != nil {
		return err
	}
	remaining := max(t.TotalStock-issued, 0)
	if err := s.stock.Set(ctx, t.ID, t.SubStockCount, remaining); err != nil {
		return Unavailable("set stock", err)
	}
	s.log.WarnContext(ctx, "stock counters rebuilt", "template_id", t.ID, "total", t.TotalStock, "issued", issued, "remaining", remaining)
	return nil
}

func (s *Service) awaitStock(ctx context.Context, t *Template) error {
	deadline := wall().Add(s.cfg.StockSettle + 10*time.Second)
	for wall().Before(deadline) {
		if _, ok, err := s.stock.Remaining(ctx, t.ID, t.SubStockCount); err == nil && ok {
			return nil
		}
		if err := ctxtime.Sleep(ctx, 20*time.Millisecond+rand.N(10*time.Millisecond)); err != nil {
			return Unavailable("wait for stock rebuild", err)
		}
	}
	return Errorf(EUNAVAILABLE, ReasonUnavailable, "stock of template %d is being rebuilt", t.ID)
}
