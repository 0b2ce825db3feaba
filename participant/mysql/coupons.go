package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencoupon/coupon/participant"
)

// Coupons keeps the coupon records, sharded by user (participant.Coupons).
// Claims are written in batches (batch.go).
type Coupons struct {
	*shards
	observe  func(size int)
	batchers []*batcher
	wg       sync.WaitGroup
	// quit ends the batchers; stopped is closed once they have all
	// returned. The queues are never closed: a claim may race Close (a
	// handler answered at its deadline still runs), and must then fail as
	// not written rather than send on a closed channel.
	quit     chan struct{}
	stopped  chan struct{}
	closeOne sync.Once
}

var _ participant.Coupons = (*Coupons)(nil)

const couponCols = `id, code, template_id, campaign_id, user_id, request_id, status, claimed_at, expire_at,
 order_no, discount_amount, used_at, lock_gid, lock_branch, locked_at, event_seq`

func scanCoupon(r scanner) (*participant.Coupon, error) { return scanCouponAnd(r) }

// scanCouponAnd scans couponCols and then extra columns.
func scanCouponAnd(r scanner, extra ...any) (*participant.Coupon, error) {
	var c participant.Coupon
	var used, locked sql.NullTime
	dest := append([]any{&c.ID, &c.Code, &c.TemplateID, &c.CampaignID, &c.UserID, &c.RequestID, &c.Status,
		&c.ClaimedAt, &c.ExpireAt, &c.OrderNo, &c.DiscountAmount, &used, &c.LockGID, &c.LockBranch, &locked, &c.EventSeq}, extra...)
	err := r.Scan(dest...)
	c.UsedAt, c.LockedAt = used.Time, locked.Time
	return &c, err
}

// Claimed reads the user's claim count for the template (the count that
// enforces per_user_limit).
func (s *Coupons) Claimed(ctx context.Context, userID, templateID int64) (int32, error) {
	sh := s.ofUser(userID)
	var n int32
	err := sh.db.QueryRowContext(ctx, `SELECT claimed FROM claim_count_`+sh.suffix()+` WHERE user_id = ? AND template_id = ?`,
		userID, templateID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, wrap("read claim count", err)
}

// Insert counts the claim against the per-user limit and writes the coupon
// in one transaction on the user's shard, batched with concurrent claims
// (see batch.go).
func (s *Coupons) Insert(ctx context.Context, cl participant.Claim) error {
	return s.submit(ctx, cl)
}

// insertOne is Insert for one claim in its own transaction: a batch of
// one, so that the per-user limit is decided and the coupon written by the
// same statements as a batch's (tablePlan).
func (s *Coupons) insertOne(ctx context.Context, cl participant.Claim) error {
	sh := s.ofUser(cl.Coupon.UserID)
	results, err := s.tryBatch(ctx, sh.db, []*claimJob{{ctx: ctx, claim: cl, table: sh.table}})
	if err == nil {
		err = results[0]
	}
	if key, dup := isDuplicate(err); dup && strings.Contains(key, "uk_request") {
		err = participant.ErrDuplicateRequest
	}
	switch {
	case err == nil, errors.Is(err, participant.ErrDuplicateRequest), errors.Is(err, participant.ErrCommitUnknown):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The transaction never committed: database/sql rolls it back.
		return participant.Unavailable("write coupon", err)
	}
	return wrap("write coupon", err)
}

func (s *Coupons) one(ctx context.Context, userID int64, where string, arg any, what string) (*participant.Coupon, error) {
	sh := s.ofUser(userID)
	c, err := scanCoupon(sh.db.QueryRowContext(ctx, `SELECT `+couponCols+` FROM coupon_`+sh.suffix()+` WHERE `+where+` AND user_id = ?`, arg, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("coupon", arg)
	}
	return c, wrap(what, err)
}

// ByRequest finds the coupon a request ID produced in the user's table,
// whoever's it is (the unique key is per table).
func (s *Coupons) ByRequest(ctx context.Context, userID int64, requestID string) (*participant.Coupon, error) {
	sh := s.ofUser(userID)
	c, err := scanCoupon(sh.db.QueryRowContext(ctx, `SELECT `+couponCols+` FROM coupon_`+sh.suffix()+` WHERE request_id = ?`, requestID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("coupon for request", requestID)
	}
	return c, wrap("read coupon by request id", err)
}

// ByCode reads one of the user's coupons by code.
func (s *Coupons) ByCode(ctx context.Context, userID int64, code string) (*participant.Coupon, error) {
	id, ok := participant.CodeID(code)
	if !ok {
		return nil, notFound("coupon", code)
	}
	sh := s.ofUser(userID)
	c, err := scanCoupon(sh.db.QueryRowContext(ctx, `SELECT `+couponCols+` FROM coupon_`+sh.suffix()+` WHERE id = ? AND code = ? AND user_id = ?`, id, code, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("coupon", code)
	}
	return c, wrap("read coupon", err)
}

// ByID reads one of the user's coupons by ID.
func (s *Coupons) ByID(ctx context.Context, userID, id int64) (*participant.Coupon, error) {
	return s.one(ctx, userID, "id = ?", id, "read coupon")
}

// statusClause filters by effective status (see Coupon.EffectiveStatus).
func statusClause(f participant.CouponFilter) (string, []any) {
	switch f.Status {
	case participant.CouponAvailable:
		return " AND status = 1 AND expire_at > ?", []any{f.Now.UTC()}
	case participant.CouponExpired:
		return " AND (status = 4 OR (status = 1 AND expire_at <= ?))", []any{f.Now.UTC()}
	case participant.CouponLocked, participant.CouponUsed:
		return " AND status = ?", []any{f.Status}
	}
	return "", nil
}

// ListByUser pages through a user's coupons, newest first.
func (s *Coupons) ListByUser(ctx context.Context, userID int64, f participant.CouponFilter, p participant.Page) ([]*participant.Coupon, string, error) {
	cs, next, _, err := s.listByUser(ctx, userID, f, p, false)
	return cs, next, err
}

// ListByUserAndBinds is ListByUser with the user's bind intents. The page
// carries, in the same query, whether the user has any (an uncorrelated
// EXISTS, evaluated once); only a user with an intent, or with no coupon
// on the page, costs a second lookup of bind_intent.
func (s *Coupons) ListByUserAndBinds(ctx context.Context, userID int64, f participant.CouponFilter, p participant.Page) ([]*participant.Coupon, string, []participant.Phone, error) {
	cs, next, binding, err := s.listByUser(ctx, userID, f, p, true)
	if err != nil || (!binding && len(cs) > 0) {
		return cs, next, nil, err
	}
	phones, err := s.bindIntents(ctx, userID)
	return cs, next, phones, err
}

func (s *Coupons) listByUser(ctx context.Context, userID int64, f participant.CouponFilter, p participant.Page, binds bool) ([]*participant.Coupon, string, bool, error) {
	after, err := afterID(p.After)
	if err != nil {
		return nil, "", false, err
	}
	sh := s.ofUser(userID)
	var args []any
	q := `SELECT ` + couponCols + `, FALSE FROM coupon_` + sh.suffix() + ` WHERE user_id = ?`
	if binds {
		q = `SELECT ` + couponCols + `, EXISTS(SELECT 1 FROM bind_intent_` + sh.suffix() + ` WHERE user_id = ?) FROM coupon_` + sh.suffix() + ` WHERE user_id = ?`
		args = append(args, userID)
	}
	args = append(args, userID)
	if f.TemplateID > 0 {
		q += " AND template_id = ?"
		args = append(args, f.TemplateID)
	}
	sc, sargs := statusClause(f)
	q += sc
	args = append(args, sargs...)
	if after > 0 {
		q += " AND id < ?"
		args = append(args, after)
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, p.Size+1)
	rows, err := sh.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", false, wrap("list user coupons", err)
	}
	defer rows.Close()
	var out []*participant.Coupon
	binding := false
	for rows.Next() {
		var b bool
		c, err := scanCouponAnd(rows, &b)
		if err != nil {
			return nil, "", false, wrap("list user coupons", err)
		}
		binding = binding || b
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, "", false, wrap("list user coupons", err)
	}
	next := ""
	if len(out) > p.Size {
		out = out[:p.Size]
		next = strconv.FormatInt(out[len(out)-1].ID, 10)
	}
	return out, next, binding, nil
}

func (s *Coupons) list(ctx context.Context, db *sql.DB, q string, args []any) ([]*participant.Coupon, error) {
	return queryCoupons(ctx, db, scanCoupon, q, args)
}

// queryCoupons runs q and scans every row with scan.
func queryCoupons(ctx context.Context, db *sql.DB, scan func(scanner) (*participant.Coupon, error), q string, args []any) ([]*participant.Coupon, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*participant.Coupon
	for rows.Next() {
		c, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ListByTemplate pages through a template's coupons table by table. The
// page token is "table:lastID".
func (s *Coupons) ListByTemplate(ctx context.Context, templateID int64, f participant.CouponFilter, p participant.Page) ([]*participant.Coupon, string, error) {
	table, after := 0, int64(0)
	if p.After != "" {
		ts, is, ok := strings.Cut(p.After, ":")
		var err1, err2 error
		table, err1 = strconv.Atoi(ts)
		after, err2 = strconv.ParseInt(is, 10, 64)
		if !ok || err1 != nil || err2 != nil || table < 0 || table >= s.tables() || after < 0 {
			return nil, "", participant.Invalid("page_token", "is malformed")
		}
	}
	var out []*participant.Coupon
	for ; table < s.tables(); table, after = table+1, 0 {
		db := s.dbs[table/s.perShard]
		q := fmt.Sprintf(`SELECT %s FROM coupon_%04d WHERE template_id = ?`, couponCols, table)
		args := []any{templateID}
		sc, sargs := statusClause(f)
		q += sc + " AND id > ? ORDER BY id LIMIT ?"
		args = append(append(args, sargs...), after, p.Size-len(out))
		cs, err := s.list(ctx, db, q, args)
		if err != nil {
			return nil, "", wrap("list template coupons", err)
		}
		out = append(out, cs...)
		if len(out) == p.Size {
			return out, fmt.Sprintf("%d:%d", table, out[len(out)-1].ID), nil
		}
	}
	return out, "", nil
}

// perShardQuery runs one UNION ALL query per shard database over all its tables.
func (s *shards) perShardQuery(ctx context.Context, sel func(table int) string, args func() []any, scan func(*sql.Rows) error) error {
	for i, db := range s.dbs {
		var parts []string
		var all []any
		for _, t := range s.tablesOf(i) {
			parts = append(parts, sel(t))
			all = append(all, args()...)
		}
		rows, err := db.QueryContext(ctx, strings.Join(parts, " UNION ALL "), all...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Issued counts the template's coupons in every table, pending phone
// claims included. Pending rows are counted first: a coupon that moves to
// its user in between is counted twice (stock undersold for a moment),
// never zero times (oversold).
func (s *Coupons) Issued(ctx context.Context, templateID int64) (int64, error) {
	total, err := s.pendingIssued(ctx, templateID)
	if err != nil {
		return 0, err
	}
	err = s.perShardQuery(ctx,
		func(t int) string { return fmt.Sprintf("SELECT COUNT(*) FROM coupon_%04d WHERE template_id = ?", t) },
		func() []any { return []any{templateID} },
		func(r *sql.Rows) error {
			var n int64
			err := r.Scan(&n)
			total += n
			return err
		})
	return total, wrap("count issued coupons", err)
}

// Stats counts the template's coupons by effective status.
func (s *Coupons) Stats(ctx context.Context, templateID int64, now time.Time) (participant.TemplateStats, error) {
	var st participant.TemplateStats
	now = now.UTC()
	err := s.perShardQuery(ctx,
		func(t int) string {
			return fmt.Sprintf("SELECT status, expire_at <= ?, COUNT(*) FROM coupon_%04d WHERE template_id = ? GROUP BY status, expire_at <= ?", t)
		},
		func() []any { return []any{now, templateID, now} },
		func(r *sql.Rows) error {
			var status participant.CouponStatus
			var expired bool
			var n int64
			if err := r.Scan(&status, &expired, &n); err != nil {
				return err
			}
			c := participant.Coupon{Status: status}
			if expired {
				c.ExpireAt = now
			} else {
				c.ExpireAt = now.Add(time.Hour)
			}
			switch c.EffectiveStatus(now) {
			case participant.CouponAvailable:
				st.Available += n
			case participant.CouponLocked:
				st.Locked += n
			case participant.CouponUsed:
				st.Used += n
			case participant.CouponExpired:
				st.Expired += n
			}
			st.Issued += n
			return nil
		})
	if err != nil {
		return st, wrap("count template coupons", err)
	}
	// Coupons claimed by phone and not yet bound are issued and AVAILABLE
	// until they expire; one being moved right now may show twice.
	err = s.perShardQuery(ctx,
		func(t int) string {
			return fmt.Sprintf("SELECT expire_at <= ?, COUNT(*) FROM pending_coupon_%04d WHERE template_id = ? GROUP BY expire_at <= ?", t)
		},
		func() []any { return []any{now, templateID, now} },
		func(r *sql.Rows) error {
			var expired bool
			var n int64
			if err := r.Scan(&expired, &n); err != nil {
				return err
			}
			if expired {
				st.Expired += n
			} else {
				st.Available += n
			}
			st.Issued += n
			return nil
		})
	return st, wrap("count pending coupons", err)
}

// Ledger reads the ledger rows of the user's coupons, oldest first, from
// the user's shard database.
func (s *Coupons) Ledger(ctx context.Context, userID int64, ids []int64) ([]participant.LedgerEntry, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := s.ofUser(userID).db.QueryContext(ctx, `SELECT id, op, order_no, gid, branch_id, coupon_id, coupon_code,
 user_id, template_id, discount_amount, created_at FROM coupon_ledger WHERE coupon_id IN (`+placeholders("?", len(ids))+`) ORDER BY id`, args...)
	if err != nil {
		return nil, wrap("read coupon ledger", err)
	}
	defer rows.Close()
	var out []participant.LedgerEntry
	for rows.Next() {
		var e participant.LedgerEntry
		if err := rows.Scan(&e.ID, &e.Op, &e.OrderNo, &e.GID, &e.BranchID, &e.CouponID, &e.CouponCode,
			&e.UserID, &e.TemplateID, &e.Discount, &e.CreatedAt); err != nil {
			return nil, wrap("read coupon ledger", err)
		}
		out = append(out, e)
	}
	return out, wrap("read coupon ledger", rows.Err())
}

// LockedCoupons counts LOCKED coupons in every table, and those locked
// before stuckBefore, through idx_expire (status first).
func (s *Coupons) LockedCoupons(ctx context.Context, stuckBefore time.Time) (locked, stuck int64, err error) {
	err = s.perShardQuery(ctx,
		func(t int) string {
			return fmt.Sprintf("SELECT COUNT(*), COALESCE(SUM(locked_at < ?), 0) FROM coupon_%04d WHERE status = ?", t)
		},
		func() []any { return []any{stuckBefore.UTC(), participant.CouponLocked} },
		func(r *sql.Rows) error {
			var l, st int64
			err := r.Scan(&l, &st)
			locked, stuck = locked+l, stuck+st
			return err
		})
	return locked, stuck, wrap("count locked coupons", err)
}
