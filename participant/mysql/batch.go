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

func (s *Store) startBatchers() {
	s.batchers = make([]*batcher, len(s.shards))
	for i, db := range s.shards {
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
}

func (b *batcher) run(s *Store) {
	for first := range b.queue {
		jobs := []*claimJob{first}
	fill:
		for len(jobs) < maxBatch {
			select {
			case j, ok := <-b.queue:
				if !ok {
					break fill
				}
				jobs = append(jobs, j)
			default:
				break fill
			}
		}
		s.writeBatch(b.db, jobs)
	}
}

// submit queues a claim and waits for its batch.
func (s *Store) submit(ctx context.Context, cl participant.Claim) error {
	sh := s.ShardOf(cl.Coupon.UserID)
	j := &claimJob{ctx: ctx, claim: cl, table: sh.Table, done: make(chan error, 1)}
	select {
	case s.batchers[sh.Index].queue <- j:
	case <-ctx.Done():
		return participant.Unavailable("queue coupon write", ctx.Err())
	}
	// Once queued the job is written or failed by the batch; its outcome
	// must be waited for, since the row may commit.
	return <-j.done
}

func (s *Store) writeBatch(db *sql.DB, jobs []*claimJob) {
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
// which case nothing was written (except with ErrCommitUnknown). Whatever
// does not depend on a read goes in one multi-statement round trip: the
// count rows of limited templates are created and locked together, read
// table by table, and then every coupon insert and count update of the
// batch is sent at once.
func (s *Store) tryBatch(ctx context.Context, db *sql.DB, jobs []*claimJob) ([]error, error) {
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
		for i := range results {
			results[i] = nil
		}
		var lockSQL []string
		var lockArgs []any
		for _, p := range plans {
			if q, args := p.lockStatement(); q != "" {
				lockSQL = append(lockSQL, q)
				lockArgs = append(lockArgs, args...)
			}
		}
		if len(lockSQL) > 0 {
			if _, err := tx.ExecContext(ctx, strings.Join(lockSQL, ";\n"), lockArgs...); err != nil {
				return err
			}
		}
		var writeSQL []string
		var writeArgs []any
		for _, p := range plans {
			counts, err := p.readCounts(ctx, tx)
			if err != nil {
				return err
			}
			q, args := p.decide(jobs, counts, results)
			writeSQL = append(writeSQL, q...)
			writeArgs = append(writeArgs, args...)
		}
		if len(writeSQL) == 0 {
			return nil
		}
		// A request ID written before (a retry whose Redis marker is gone)
		// fails its insert on the unique key; the batch is then retried
		// claim by claim, which answers that claim with ErrDuplicateRequest.
		_, err := tx.ExecContext(ctx, strings.Join(writeSQL, ";\n"), writeArgs...)
		return err
	})
	return results, err
}

// tablePlan is one table's share of a batch.
type tablePlan struct {
	table     int
	suffix    string
	idx       []int
	limited   []countKey // counts with a per-user limit: locked and read
	free      []countKey // the others: only added to
	isLimited map[countKey]bool
}

// planTable classifies each (user, template) count of the table's share.
// A count is limited — locked and read, then written as an absolute value —
// when any claim on it has a per-user limit, whatever the others say: the
// template's limit may change between two claims of one batch, and a count
// must be written one way or the other, not both.
func planTable(table int, jobs []*claimJob, idx []int) *tablePlan {
	p := &tablePlan{table: table, suffix: fmt.Sprintf("%04d", table), idx: idx, isLimited: map[countKey]bool{}}
	seen := map[countKey]bool{}
	for _, i := range idx {
		c := jobs[i].claim.Coupon
		k := countKey{table, c.UserID, c.TemplateID}
		seen[k] = true
		if jobs[i].claim.PerUserLimit > 0 {
			p.isLimited[k] = true
		}
	}
	for k := range seen {
		if p.isLimited[k] {
			p.limited = append(p.limited, k)
		} else {
			p.free = append(p.free, k)
		}
	}
	// Lock in key order, so that concurrent batches lock in the same order.
	sortKeys(p.limited)
	sortKeys(p.free)
	return p
}

func keyArgs(keys []countKey) []any {
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k.user, k.templateID)
	}
	return args
}

// lockStatement creates (at 0) and locks the limited count rows.
func (p *tablePlan) lockStatement() (string, []any) {
	if len(p.limited) == 0 {
		return "", nil
	}
	return `INSERT INTO claim_count_` + p.suffix + ` (user_id, template_id, claimed) VALUES ` +
		placeholders("(?,?,0)", len(p.limited)) + ` ON DUPLICATE KEY UPDATE claimed = claimed`, keyArgs(p.limited)
}

// readCounts reads the locked counts. It must be a locking read: a plain
// one would answer from the snapshot the transaction took at its first
// read, which may predate commits to this table's counts.
func (p *tablePlan) readCounts(ctx context.Context, tx *sql.Tx) (map[countKey]int32, error) {
	counts := make(map[countKey]int32, len(p.limited))
	if len(p.limited) == 0 {
		return counts, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT user_id, template_id, claimed FROM claim_count_`+p.suffix+
		` WHERE (user_id, template_id) IN (`+placeholders("(?,?)", len(p.limited))+`) FOR UPDATE`, keyArgs(p.limited)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		k := countKey{table: p.table}
		var n int32
		if err := rows.Scan(&k.user, &k.templateID, &n); err != nil {
			return nil, err
		}
		counts[k] = n
	}
	return counts, rows.Err()
}

// decide answers each claim in arrival order and returns the statements
// that write the accepted ones.
func (p *tablePlan) decide(jobs []*claimJob, counts map[countKey]int32, results []error) ([]string, []any) {
	adds := map[countKey]int32{}
	var ins []any
	n := 0
	for _, i := range p.idx {
		c := jobs[i].claim.Coupon
		k := countKey{p.table, c.UserID, c.TemplateID}
		if p.isLimited[k] {
			// Each claim is decided by its own limit (0: none) on the
			// count as the batch has it so far.
			if limit := jobs[i].claim.PerUserLimit; limit > 0 && counts[k] >= limit {
				results[i] = participant.Errorf(participant.EREFUSED, participant.ReasonUserLimitReached, "per-user limit reached")
				continue
			}
			counts[k]++
		} else {
			adds[k]++
		}
		ins = append(ins, c.ID, c.Code, c.TemplateID, c.CampaignID, c.UserID, c.RequestID, c.Status,
			c.ClaimedAt.UTC(), c.ExpireAt.UTC(), c.ClaimedAt.UTC())
		n++
	}
	if n == 0 {
		return nil, nil
	}
	stmts := []string{`INSERT INTO coupon_` + p.suffix + ` (id, code, template_id, campaign_id, user_id,
 request_id, status, claimed_at, expire_at, updated_at) VALUES ` + placeholders("(?,?,?,?,?,?,?,?,?,?)", n)}
	args := ins
	if len(p.limited) > 0 {
		stmts = append(stmts, `INSERT INTO claim_count_`+p.suffix+` (user_id, template_id, claimed) VALUES `+
			placeholders("(?,?,?)", len(p.limited))+` ON DUPLICATE KEY UPDATE claimed = VALUES(claimed)`)
		for _, k := range p.limited {
			args = append(args, k.user, k.templateID, counts[k])
		}
	}
	var free []countKey
	for _, k := range p.free {
		if adds[k] > 0 {
			free = append(free, k)
		}
	}
	if len(free) > 0 {
		stmts = append(stmts, `INSERT INTO claim_count_`+p.suffix+` (user_id, template_id, claimed) VALUES `+
			placeholders("(?,?,?)", len(free))+` ON DUPLICATE KEY UPDATE claimed = claimed + VALUES(claimed)`)
		for _, k := range free {
			args = append(args, k.user, k.templateID, adds[k])
		}
	}
	return stmts, args
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
