package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/opencoupon/coupon/participant"
)

// Claims are written in batches: concurrent claims for one shard database
// are grouped into one transaction (multi-row upserts of the per-user
// counts and multi-row inserts of the coupons). A batch takes whatever has
// queued while the previous one committed, so it adds no latency when the
// service is idle and grows with load. Each caller still gets its own
// answer: the per-user limit is decided claim by claim on rows the batch
// has locked, and any batch that fails as a whole is retried claim by claim
// so that one bad claim cannot fail the others.

const (
	maxBatch       = 128
	batchWorkers   = 1
	batchQueueSize = 8192
)

type claimJob struct {
	ctx   context.Context
	claim participant.Claim
	table int
	done  chan error
}

type batcher struct {
	db    *sql.DB
	queue chan *claimJob
}

func (s *Coupons) startBatchers() {
	s.quit, s.stopped = make(chan struct{}), make(chan struct{})
	s.batchers = make([]*batcher, len(s.dbs))
	for i, db := range s.dbs {
		b := &batcher{db: db, queue: make(chan *claimJob, batchQueueSize)}
		s.batchers[i] = b
		for range batchWorkers {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				b.run(s)
			}()
		}
	}
	go func() { s.wg.Wait(); close(s.stopped) }()
}

// stopBatchers ends the batchers once the claims already queued are
// written.
func (s *Coupons) stopBatchers() {
	s.closeOne.Do(func() {
		if s.quit != nil {
			close(s.quit)
			<-s.stopped
		}
	})
}

// run writes batches until Close, then writes what is still queued and
// returns.
func (b *batcher) run(s *Coupons) {
	for {
		var first *claimJob
		select {
		case first = <-b.queue:
		case <-s.quit:
			select {
			case first = <-b.queue:
			default:
				return
			}
		}
		jobs := []*claimJob{first}
	fill:
		for len(jobs) < maxBatch {
			select {
			case j := <-b.queue:
				jobs = append(jobs, j)
			default:
				break fill
			}
		}
		s.writeBatch(b.db, jobs)
	}
}

// submit queues a claim and waits for its batch.
func (s *Coupons) submit(ctx context.Context, cl participant.Claim) error {
	sh := s.ofUser(cl.Coupon.UserID)
	j := &claimJob{ctx: ctx, claim: cl, table: sh.table, done: make(chan error, 1)}
	select {
	case <-s.quit:
		return participant.Unavailable("queue coupon write", errStoreClosed)
	default:
	}
	select {
	case s.batchers[sh.index].queue <- j:
	case <-ctx.Done():
		return participant.Unavailable("queue coupon write", ctx.Err())
	case <-s.quit:
		return participant.Unavailable("queue coupon write", errStoreClosed)
	}
	// Once queued the job is written or failed by the batch; its outcome
	// must be waited for, since the row may commit. A job still queued when
	// the batchers have stopped was never sent.
	select {
	case err := <-j.done:
		return err
	case <-s.stopped:
		select {
		case err := <-j.done:
			return err
		default:
			return participant.Unavailable("queue coupon write", errStoreClosed)
		}
	}
}

// errStoreClosed fails a claim that reached the store after Close; its
// coupon was not written.
var errStoreClosed = errors.New("store closed")

func (s *Coupons) writeBatch(db *sql.DB, jobs []*claimJob) {
	live := jobs[:0]
	for _, j := range jobs {
		if err := j.ctx.Err(); err != nil {
			j.done <- participant.Unavailable("write coupon", err) // not written: give the stock back
			continue
		}
		live = append(live, j)
	}
	if len(live) == 0 {
		return
	}
	if s.observe != nil {
		s.observe(len(live))
	}
	live, alone := splitBatch(live)
	defer func() {
		for _, j := range alone {
			j.done <- s.insertOne(j.ctx, j.claim)
		}
	}()
	if len(live) == 0 {
		return
	}
	if len(live) == 1 {
		live[0].done <- s.insertOne(live[0].ctx, live[0].claim)
		return
	}
	// The batch runs on its own deadline: callers' contexts are each bounded
	// by the claim write timeout, and the earliest bounds the batch.
	ctx := live[0].ctx
	for _, j := range live[1:] {
		if d1, ok := j.ctx.Deadline(); ok {
			if d0, ok0 := ctx.Deadline(); !ok0 || d1.Before(d0) {
				ctx = j.ctx
			}
		}
	}
	results, err := s.tryBatch(ctx, db, live)
	switch {
	case err == nil:
		for i, j := range live {
			j.done <- results[i]
		}
	case errors.Is(err, participant.ErrCommitUnknown):
		for _, j := range live {
			j.done <- err
		}
	default:
		// Nothing of the batch was written: each claim on its own.
		for _, j := range live {
			j.done <- s.insertOne(j.ctx, j.claim)
		}
	}
}

type countKey struct {
	table            int
	user, templateID int64
}

// tryBatch writes the batch in one transaction and returns each claim's
// outcome (nil or USER_LIMIT_REACHED), or an error for the whole batch, in
// which case nothing was written (except with ErrCommitUnknown). It costs
// two round trips whatever the number of tables: first one upsert per
// table counts every (user, template) of the batch against its limit and
// returns how many of its claims it accepted (the row lock makes the count
// exact), then one insert per table writes the accepted coupons.
func (s *Coupons) tryBatch(ctx context.Context, db *sql.DB, jobs []*claimJob) ([]error, error) {
	results := make([]error, len(jobs))
	byTable := map[int][]int{}
	for i, j := range jobs {
		byTable[j.table] = append(byTable[j.table], i)
	}
	tables := make([]int, 0, len(byTable))
	for t := range byTable {
		tables = append(tables, t)
	}
	sort.Ints(tables)
	plans := make([]*tablePlan, len(tables))
	for n, t := range tables {
		plans[n] = planTable(t, jobs, byTable[t])
	}
	err := s.inTx(ctx, db, func(tx *sql.Tx) error {
		var countSQL []string
		var countArgs []any
		for _, p := range plans {
			q, args := p.countStatement(jobs)
			countSQL = append(countSQL, q)
			countArgs = append(countArgs, args...)
		}
		accepted := make(map[countKey]int32, len(jobs))
		rows, err := tx.QueryContext(ctx, strings.Join(countSQL, ";\n"), countArgs...)
		if err != nil {
			return err
		}
		for n := 0; ; n++ {
			for rows.Next() {
				k := countKey{table: plans[n].table}
				var d int32
				if err := rows.Scan(&k.user, &k.templateID, &d); err != nil {
					rows.Close()
					return err
				}
				accepted[k] = d
			}
			if n == len(plans)-1 || !rows.NextResultSet() {
				break
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		var insertSQL []string
		var insertArgs []any
		var evs []OutboxEvent
		for _, p := range plans {
			q, args, claimed := p.insertStatement(jobs, accepted, results, s.events)
			if q != "" {
				insertSQL = append(insertSQL, q)
				insertArgs = append(insertArgs, args...)
			}
			evs = append(evs, claimed...)
		}
		if len(insertSQL) == 0 {
			return nil
		}
		// The batch's coupon.claimed events, all in one outbox row.
		if q, args := eventInsert(evs); q != "" {
			insertSQL = append(insertSQL, q)
			insertArgs = append(insertArgs, args...)
		}
		// A request ID written before (a retry whose Redis marker is gone)
		// fails its insert on the unique key; the batch is then retried
		// claim by claim, which answers that claim with ErrDuplicateRequest.
		_, err = tx.ExecContext(ctx, strings.Join(insertSQL, ";\n"), insertArgs...)
		return err
	})
	return results, err
}

// tablePlan is one table's share of a batch: its (user, template) counts
// in key order (so that concurrent batches lock in the same order), each
// with its claims in arrival order and the limit they are decided by.
type tablePlan struct {
	table  int
	suffix string
	keys   []countKey
	claims map[countKey][]int
	limit  map[countKey]int32
}

// planTable groups the table's claims by count; the claims on one count
// share one limit (splitBatch took out counts whose claims disagree).
func planTable(table int, jobs []*claimJob, idx []int) *tablePlan {
	p := &tablePlan{table: table, suffix: fmt.Sprintf("%04d", table), claims: map[countKey][]int{}, limit: map[countKey]int32{}}
	for _, i := range idx {
		c := jobs[i].claim.Coupon
		k := countKey{table, c.UserID, c.TemplateID}
		if _, seen := p.claims[k]; !seen {
			p.keys = append(p.keys, k)
			p.limit[k] = jobs[i].claim.PerUserLimit
		}
		p.claims[k] = append(p.claims[k], i)
	}
	sortKeys(p.keys)
	return p
}

// splitBatch takes out the claims on counts whose claims read different
// per-user limits (the template's limit changed between them): the batch
// decides a count in one statement under one limit, so those are written
// one by one, each under its own limit, after the batch.
func splitBatch(jobs []*claimJob) (batch, alone []*claimJob) {
	limits := map[countKey]int32{}
	mixed := map[countKey]bool{}
	for _, j := range jobs {
		k := countKey{j.table, j.claim.Coupon.UserID, j.claim.Coupon.TemplateID}
		if l, seen := limits[k]; seen && l != j.claim.PerUserLimit {
			mixed[k] = true
		}
		limits[k] = j.claim.PerUserLimit
	}
	if len(mixed) == 0 {
		return jobs, nil
	}
	for _, j := range jobs {
		if mixed[countKey{j.table, j.claim.Coupon.UserID, j.claim.Coupon.TemplateID}] {
			alone = append(alone, j)
		} else {
			batch = append(batch, j)
		}
	}
	return batch, alone
}

// countStatement counts each key's claims against its limit (0: none) and
// returns how many it accepted. A new row accepts what the limit allows of
// the claims; an existing one as many as fit under the limit from its
// count (none when a lowered limit is already passed). Assignments run
// left to right, so claimed adds the delta just computed.
func (p *tablePlan) countStatement(jobs []*claimJob) (string, []any) {
	args := make([]any, 0, 6*len(p.keys))
	for _, k := range p.keys {
		n, l := int32(len(p.claims[k])), p.limit[k]
		first := n
		if l > 0 {
			first = min(n, l)
		}
		args = append(args, k.user, k.templateID, first, first, n, l)
	}
	return `INSERT INTO claim_count_` + p.suffix + ` (user_id, template_id, claimed, delta, req, lim) VALUES ` +
		placeholders("(?,?,?,?,?,?)", len(p.keys)) + ` ON DUPLICATE KEY UPDATE
 delta = IF(VALUES(lim) = 0, VALUES(req), GREATEST(0, LEAST(claimed + VALUES(req), VALUES(lim)) - claimed)),
 claimed = claimed + delta, req = VALUES(req), lim = VALUES(lim)
 RETURNING user_id, template_id, delta`, args
}

// insertStatement writes the accepted claims of each key (the first ones
// to arrive) and marks the rest USER_LIMIT_REACHED; with events on it also
// returns their coupon.claimed events (written by the caller, one outbox
// row for the whole batch).
func (p *tablePlan) insertStatement(jobs []*claimJob, accepted map[countKey]int32, results []error, events bool) (string, []any, []OutboxEvent) {
	var ins []any
	var evs []OutboxEvent
	n := 0
	for _, k := range p.keys {
		for pos, i := range p.claims[k] {
			if int32(pos) >= accepted[k] {
				results[i] = errUserLimit()
				continue
			}
			results[i] = nil
			c := jobs[i].claim.Coupon
			ins = append(ins, c.ID, c.Code, c.TemplateID, c.CampaignID, c.UserID, c.RequestID, c.Status,
				c.ClaimedAt.UTC(), c.ExpireAt.UTC(), c.ClaimedAt.UTC())
			n++
			if events {
				evs = append(evs, claimedEvent(c))
			}
		}
	}
	if n == 0 {
		return "", nil, nil
	}
	return `INSERT INTO coupon_` + p.suffix + ` (` + couponInsertCols + `) VALUES ` + placeholders("(?,?,?,?,?,?,?,?,?,?)", n), ins, evs
}

// couponInsertCols are the columns a new coupon row is written with, by a
// claim (insertStatement) and by a phone's coupon moving to its user
// (copyCoupon).
const couponInsertCols = `id, code, template_id, campaign_id, user_id,
 request_id, status, claimed_at, expire_at, updated_at`

// errUserLimit refuses a claim past the per-user (or, before binding,
// per-phone) limit.
func errUserLimit() error {
	return participant.Errorf(participant.EREFUSED, participant.ReasonUserLimitReached, "per-user limit reached")
}

func sortKeys(keys []countKey) {
	sort.Slice(keys, func(a, b int) bool {
		if keys[a].user != keys[b].user {
			return keys[a].user < keys[b].user
		}
		return keys[a].templateID < keys[b].templateID
	})
}

func placeholders(one string, n int) string {
	var b strings.Builder
	b.Grow(n * (len(one) + 1))
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(one)
	}
	return b.String()
}
