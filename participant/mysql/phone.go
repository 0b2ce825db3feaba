package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/opencoupon/coupon/participant"
)

// Phones keeps claims by phone number and the moves of their coupons to
// the phone's user (participant.Phones).
type Phones struct{ *shards }

var _ participant.Phones = (*Phones)(nil)

// A phone's binding (phone_NNNN) and pending coupons (pending_coupon_NNNN)
// live in the table numbered by the phone, over the same tables and
// databases as users; a user's bind intents (bind_intent_NNNN) live beside
// the user's coupons.

const pendingCols = `id, code, template_id, campaign_id, request_id, status, claimed_at, expire_at, phone`

func scanPending(r scanner) (*participant.Coupon, error) {
	var c participant.Coupon
	var phone string
	err := r.Scan(&c.ID, &c.Code, &c.TemplateID, &c.CampaignID, &c.RequestID, &c.Status, &c.ClaimedAt, &c.ExpireAt, &phone)
	c.Phone = participant.Phone(phone)
	return &c, err
}

// PhoneOwner reads the user the phone is bound to, 0 when none.
func (s *Phones) PhoneOwner(ctx context.Context, p participant.Phone) (int64, error) {
	sh := s.ofPhone(p)
	var userID int64
	err := sh.db.QueryRowContext(ctx, `SELECT user_id FROM phone_`+sh.suffix()+` WHERE phone = ?`, p.E164()).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return userID, wrap("read phone binding", err)
}

// PendingClaimed counts the phone's pending coupons of the template.
func (s *Phones) PendingClaimed(ctx context.Context, p participant.Phone, templateID int64) (int32, error) {
	sh := s.ofPhone(p)
	var n int32
	err := sh.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pending_coupon_`+sh.suffix()+` WHERE phone = ? AND template_id = ?`,
		p.E164(), templateID).Scan(&n)
	return n, wrap("count pending coupons", err)
}

// lockPhone creates the phone's row when it has none and locks it; claims
// and binds of one phone take turns on this lock. It returns the user the
// phone is bound to, 0 when none.
func lockPhone(ctx context.Context, tx *sql.Tx, sh shard, p participant.Phone) (int64, error) {
	if _, err := tx.ExecContext(ctx, `INSERT INTO phone_`+sh.suffix()+` (phone, user_id, created_at) VALUES (?, 0, UTC_TIMESTAMP(6))
 ON DUPLICATE KEY UPDATE phone = phone`, p.E164()); err != nil {
		return 0, err
	}
	var userID int64
	err := tx.QueryRowContext(ctx, `SELECT user_id FROM phone_`+sh.suffix()+` WHERE phone = ? FOR UPDATE`, p.E164()).Scan(&userID)
	return userID, err
}

// InsertPending writes a pending coupon under the phone's lock, so that the
// per-phone limit is exact and no coupon is left pending for a bound phone.
func (s *Phones) InsertPending(ctx context.Context, pc participant.PendingClaim) error {
	c := pc.Coupon
	sh := s.ofPhone(pc.Phone)
	err := s.inTx(ctx, sh.db, func(tx *sql.Tx) error {
		owner, err := lockPhone(ctx, tx, sh, pc.Phone)
		if err != nil {
			return err
		}
		if owner != 0 {
			return participant.ErrPhoneBound
		}
		if pc.PerPhoneLimit > 0 {
			// The first plain read of the transaction, after the lock: its
			// snapshot holds every pending coupon committed under the lock.
			var n int32
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pending_coupon_`+sh.suffix()+` WHERE phone = ? AND template_id = ?`,
				pc.Phone.E164(), c.TemplateID).Scan(&n); err != nil {
				return err
			}
			if n >= pc.PerPhoneLimit {
				return errUserLimit()
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO pending_coupon_`+sh.suffix()+` (id, code, template_id, campaign_id, phone,
 request_id, status, claimed_at, expire_at) VALUES (?,?,?,?,?,?,?,?,?)`,
			c.ID, c.Code, c.TemplateID, c.CampaignID, pc.Phone.E164(), c.RequestID, c.Status, c.ClaimedAt.UTC(), c.ExpireAt.UTC())
		if key, dup := isDuplicate(err); dup && strings.Contains(key, "uk_request") {
			return participant.ErrDuplicateRequest
		}
		if err != nil {
			return err
		}
		// The coupon has no user until its phone is bound; its later
		// events carry the user.
		return s.writeEvents(ctx, tx, claimedEvent(c))
	})
	switch {
	case err == nil, errors.Is(err, participant.ErrDuplicateRequest), errors.Is(err, participant.ErrCommitUnknown),
		errors.Is(err, participant.ErrPhoneBound):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The transaction never committed: database/sql rolls it back.
		return participant.Unavailable("write pending coupon", err)
	}
	return wrap("write pending coupon", err)
}

// PendingByRequest finds the pending coupon a request ID produced in the
// phone's table, whichever phone it is for.
func (s *Phones) PendingByRequest(ctx context.Context, p participant.Phone, requestID string) (*participant.Coupon, error) {
	sh := s.ofPhone(p)
	c, err := scanPending(sh.db.QueryRowContext(ctx, `SELECT `+pendingCols+` FROM pending_coupon_`+sh.suffix()+
		` WHERE request_id = ?`, requestID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("pending coupon for request", requestID)
	}
	return c, wrap("read pending coupon", err)
}

// PendingIssued counts the template's pending coupons in every table. Stock
// rebuilds must count them as issued, and count them before the coupon
// tables: a coupon moved in between is then counted twice (stock is
// undersold for a moment) rather than not at all (oversold).
func (s *Phones) PendingIssued(ctx context.Context, templateID int64) (int64, error) {
	return s.pendingIssued(ctx, templateID)
}

func (s *shards) pendingIssued(ctx context.Context, templateID int64) (int64, error) {
	var total int64
	err := s.perShardQuery(ctx,
		func(t int) string {
			return fmt.Sprintf("SELECT COUNT(*) FROM pending_coupon_%04d WHERE template_id = ?", t)
		},
		func() []any { return []any{templateID} },
		func(r *sql.Rows) error {
			var n int64
			err := r.Scan(&n)
			total += n
			return err
		})
	return total, wrap("count pending coupons", err)
}

// AddBindIntent records that the user is binding the phone (move step 0).
func (s *Phones) AddBindIntent(ctx context.Context, userID int64, p participant.Phone) error {
	sh := s.ofUser(userID)
	_, err := sh.db.ExecContext(ctx, `INSERT INTO bind_intent_`+sh.suffix()+` (user_id, phone, created_at)
 VALUES (?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE user_id = user_id`, userID, p.E164())
	return wrap("write bind intent", err)
}

// MarkBind binds the phone to the user and marks its pending coupons with
// the user, in one transaction under the phone's lock (move step 1).
func (s *Phones) MarkBind(ctx context.Context, userID int64, p participant.Phone) error {
	sh := s.ofPhone(p)
	err := s.inTx(ctx, sh.db, func(tx *sql.Tx) error {
		owner, err := lockPhone(ctx, tx, sh, p)
		if err != nil {
			return err
		}
		switch owner {
		case userID:
		case 0:
			if _, err := tx.ExecContext(ctx, `UPDATE phone_`+sh.suffix()+` SET user_id = ?, bound_at = UTC_TIMESTAMP(6) WHERE phone = ?`,
				userID, p.E164()); err != nil {
				return err
			}
		default:
			return participant.Errorf(participant.EREFUSED, participant.ReasonPhoneBoundToOtherUser, "phone %s is bound to another user", p)
		}
		_, err = tx.ExecContext(ctx, `UPDATE pending_coupon_`+sh.suffix()+` SET bind_user_id = ? WHERE phone = ? AND bind_user_id = 0`,
			userID, p.E164())
		return err
	})
	if errors.Is(err, participant.ErrCommitUnknown) {
		return participant.Unavailable("bind phone", err)
	}
	return wrap("bind phone", err)
}

// CopyBound copies the phone's coupons marked for the user into the user's
// coupon table and counts each one inserted in the user's claim count, all
// in one transaction on the user's shard (move step 2). A coupon already
// there is skipped, so a repeat copies and counts nothing twice. It returns
// the coupons as they stand in the user's table.
func (s *Phones) CopyBound(ctx context.Context, userID int64, p participant.Phone) ([]*participant.Coupon, error) {
	psh := s.ofPhone(p)
	pending, err := s.listPending(ctx, psh, `SELECT `+pendingCols+` FROM pending_coupon_`+psh.suffix()+
		` WHERE phone = ? AND bind_user_id = ? ORDER BY id`, p.E164(), userID)
	if err != nil {
		return nil, wrap("read bound coupons", err)
	}
	if len(pending) == 0 {
		return nil, nil
	}
	sh := s.ofUser(userID)
	var out []*participant.Coupon
	err = s.inTx(ctx, sh.db, func(tx *sql.Tx) error {
		counts := map[int64]int32{}
		for _, c := range pending {
			c.UserID = userID
			inserted, err := copyCoupon(ctx, tx, sh, c)
			if err != nil {
				return err
			}
			if inserted {
				counts[c.TemplateID]++
			}
		}
		// In template order, so that concurrent copies lock rows alike.
		templates := make([]int64, 0, len(counts))
		for t := range counts {
			templates = append(templates, t)
		}
		slices.Sort(templates)
		for _, t := range templates {
			if _, err := tx.ExecContext(ctx, `INSERT INTO claim_count_`+sh.suffix()+` (user_id, template_id, claimed) VALUES (?,?,?)
 ON DUPLICATE KEY UPDATE claimed = claimed + ?`, userID, t, counts[t], counts[t]); err != nil {
				return err
			}
		}
		ids := make([]string, len(pending))
		for i, c := range pending {
			ids[i] = strconv.FormatInt(c.ID, 10)
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+couponCols+` FROM coupon_`+sh.suffix()+` WHERE user_id = ? AND id IN (`+
			strings.Join(ids, ",")+`) ORDER BY id`, userID)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = out[:0]
		for rows.Next() {
			c, err := scanCoupon(rows)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return rows.Err()
	})
	if errors.Is(err, participant.ErrCommitUnknown) {
		return nil, participant.Unavailable("copy bound coupons", err)
	}
	if err != nil {
		return nil, wrap("copy bound coupons", err)
	}
	if len(out) != len(pending) {
		return nil, fmt.Errorf("copy bound coupons: %d of %d found in the user's table", len(out), len(pending))
	}
	return out, nil
}

// copyCoupon inserts c into the user's table unless it is there already,
// and reports whether it inserted it.
func copyCoupon(ctx context.Context, tx *sql.Tx, sh shard, c *participant.Coupon) (bool, error) {
	insert := func(requestID string, ignoreDup bool) (bool, error) {
		q := `INSERT INTO coupon_` + sh.suffix() + ` (` + couponInsertCols + `) VALUES (?,?,?,?,?,?,?,?,?,UTC_TIMESTAMP(6))`
		if ignoreDup {
			q += ` ON DUPLICATE KEY UPDATE id = id`
		}
		res, err := tx.ExecContext(ctx, q, c.ID, c.Code, c.TemplateID, c.CampaignID, c.UserID, requestID, c.Status,
			c.ClaimedAt.UTC(), c.ExpireAt.UTC())
		if err != nil {
			return false, err
		}
		n, err := res.RowsAffected()
		return n == 1, err
	}
	if ok, err := insert(c.RequestID, true); ok || err != nil {
		return ok, err
	}
	var owner int64
	err := tx.QueryRowContext(ctx, `SELECT user_id FROM coupon_`+sh.suffix()+` WHERE id = ? FOR UPDATE`, c.ID).Scan(&owner)
	switch {
	case err == nil && owner == c.UserID:
		return false, nil // copied before
	case err == nil:
		return false, fmt.Errorf("coupon %d is in user %d's table under user %d", c.ID, c.UserID, owner)
	case !errors.Is(err, sql.ErrNoRows):
		return false, err
	}
	// Another of the user's coupons holds the request ID (a client reused
	// it for a claim by user ID): keep this coupon under a request ID made
	// from its own ID rather than lose it. A repeat finds it by ID above.
	return insert("bound:"+strconv.FormatInt(c.ID, 10), false)
}

func (s *Phones) listPending(ctx context.Context, sh shard, q string, args ...any) ([]*participant.Coupon, error) {
	return queryCoupons(ctx, sh.db, scanPending, q, args)
}

// DeleteBound deletes copied coupons from the phone's table (move step 3).
func (s *Phones) DeleteBound(ctx context.Context, userID int64, p participant.Phone, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	sh := s.ofPhone(p)
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = strconv.FormatInt(id, 10)
	}
	_, err := sh.db.ExecContext(ctx, `DELETE FROM pending_coupon_`+sh.suffix()+` WHERE phone = ? AND bind_user_id = ? AND id IN (`+
		strings.Join(list, ",")+`)`, p.E164(), userID)
	return wrap("delete bound coupons", err)
}

// RemoveBindIntent forgets the user's intent to bind the phone (move step 4).
func (s *Phones) RemoveBindIntent(ctx context.Context, userID int64, p participant.Phone) error {
	sh := s.ofUser(userID)
	_, err := sh.db.ExecContext(ctx, `DELETE FROM bind_intent_`+sh.suffix()+` WHERE user_id = ? AND phone = ?`, userID, p.E164())
	return wrap("delete bind intent", err)
}

// BindIntents lists the phones the user may not have finished binding.
func (s *Phones) BindIntents(ctx context.Context, userID int64) ([]participant.Phone, error) {
	return s.bindIntents(ctx, userID)
}

func (s *shards) bindIntents(ctx context.Context, userID int64) ([]participant.Phone, error) {
	sh := s.ofUser(userID)
	rows, err := sh.db.QueryContext(ctx, `SELECT phone FROM bind_intent_`+sh.suffix()+` WHERE user_id = ?`, userID)
	if err != nil {
		return nil, wrap("read bind intents", err)
	}
	defer rows.Close()
	var out []participant.Phone
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, wrap("read bind intents", err)
		}
		out = append(out, participant.Phone(p))
	}
	return out, wrap("read bind intents", rows.Err())
}
