package claimbench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"time"

	"github.com/opencoupon/coupon/internal/ctxtime"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Verify is what the checks after a claim scenario found.
type Verify struct {
	Scenario  string `json:"scenario"`
	Templates int    `json:"templates"`
	// Issued counts the coupons in the shard tables; Taken the units gone
	// from the stock counters (total − remaining). They must be equal.
	Issued int64 `json:"issued"`
	Taken  int64 `json:"taken"`
	// Coupons counts the records whose request IDs were checked for uniqueness.
	Coupons int64 `json:"coupons_checked"`
	// RetriesChecked counts replayed requests whose coupon was looked up.
	RetriesChecked int   `json:"retries_checked"`
	Bursts         int64 `json:"limit_bursts"`
	Violations     int   `json:"violations"`
}

// stockRow is a template as the main database holds it.
type stockRow struct {
	total int64
	sub   int32
	limit int32
}

// verify checks the scenario's templates against the records and the
// stock counters: issued = stock taken, no user over the limit, one coupon
// per request ID, and each replayed request's coupon is the one on record.
// Broken invariants go to b.violations; an error means it could not check.
func (b *bench) verify(ctx context.Context, scenario string, tpls []*couponv1.CouponTemplate, t *tally) (*Verify, error) {
	before := b.violations.count()
	v := &Verify{Scenario: scenario, Templates: len(tpls), Bursts: t.bursts.Load()}
	ids := ids(tpls)
	rows, err := b.stockRows(ctx, ids)
	if err != nil {
		return nil, err
	}
	if err := b.checkStock(ctx, scenario, ids, rows, v); err != nil {
		return nil, err
	}
	if err := b.checkLimits(ctx, ids, rows); err != nil {
		return nil, err
	}
	if err := b.checkRequestIDs(ctx, ids, v); err != nil {
		return nil, err
	}
	if err := b.checkRetries(ctx, t, v); err != nil {
		return nil, err
	}
	v.Violations = b.violations.count() - before
	return v, nil
}

func (b *bench) stockRows(ctx context.Context, ids []int64) (map[int64]stockRow, error) {
	rs, err := b.main.QueryContext(ctx, `SELECT id, total_stock, sub_stock_count, per_user_limit FROM coupon_template WHERE id IN (`+
		placeholders(len(ids))+`)`, args(ids)...)
	if err != nil {
		return nil, fmt.Errorf("read templates: %w", err)
	}
	defer rs.Close()
	out := make(map[int64]stockRow, len(ids))
	for rs.Next() {
		var id int64
		var r stockRow
		if err := rs.Scan(&id, &r.total, &r.sub, &r.limit); err != nil {
			return nil, fmt.Errorf("read templates: %w", err)
		}
		out[id] = r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read templates: %w", err)
	}
	for _, id := range ids {
		if _, ok := out[id]; !ok {
			return nil, fmt.Errorf("template %d is not in the main database", id)
		}
	}
	return out, nil
}

// checkStock compares issued coupons with the stock taken, template by
// template. Claims whose caller gave up may still be committing, so a
// mismatch is read again until --settle has passed.
func (b *bench) checkStock(ctx context.Context, scenario string, ids []int64, rows map[int64]stockRow, v *Verify) error {
	deadline := time.Now().Add(b.o.settle)
	for {
		issued, err := b.issued(ctx, ids)
		if err != nil {
			return err
		}
		var bad []string
		v.Issued, v.Taken = 0, 0
		for _, id := range ids {
			r := rows[id]
			remaining, ok, err := b.stock.Remaining(ctx, id, r.sub)
			if err != nil {
				return err
			}
			if !ok {
				bad = append(bad, fmt.Sprintf("template %d: stock counters missing from Redis (prefix %q)", id, b.o.redisPrefix))
				continue
			}
			taken := r.total - remaining
			v.Issued += issued[id]
			v.Taken += taken
			if issued[id] != taken {
				bad = append(bad, fmt.Sprintf("template %d: %d coupons issued but %d units taken (total %d, remaining %d)",
					id, issued[id], taken, r.total, remaining))
			}
		}
		if len(bad) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, m := range bad {
				b.violations.add("%s: %s", scenario, m)
			}
			if v.Issued == 0 && v.Taken > 0 {
				b.violations.add("%s: no coupons at all in the shard tables: do --mysql-shards and --tables-per-shard match the service?", scenario)
			}
			return nil
		}
		if err := ctxtime.Sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

// issued counts the coupons of each template over every coupon table.
func (b *bench) issued(ctx context.Context, ids []int64) (map[int64]int64, error) {
	out := make(map[int64]int64, len(ids))
	err := b.eachTable(func(db *sql.DB, table int) error {
		q := fmt.Sprintf(`SELECT template_id, COUNT(*) FROM coupon_%04d WHERE template_id IN (%s) GROUP BY template_id`, table, placeholders(len(ids)))
		return query(ctx, db, q, args(ids), func(rs *sql.Rows) error {
			var id, n int64
			if err := rs.Scan(&id, &n); err != nil {
				return err
			}
			out[id] += n
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count issued coupons: %w", err)
	}
	return out, nil
}

// checkLimits looks for users holding more coupons of a template than its
// per-user limit. A user's coupons are all in one table.
func (b *bench) checkLimits(ctx context.Context, ids []int64, rows map[int64]stockRow) error {
	byLimit := map[int32][]int64{}
	for _, id := range ids {
		if l := rows[id].limit; l > 0 {
			byLimit[l] = append(byLimit[l], id)
		}
	}
	for limit, ids := range byLimit {
		err := b.eachTable(func(db *sql.DB, table int) error {
			q := fmt.Sprintf(`SELECT user_id, template_id, COUNT(*) FROM coupon_%04d WHERE template_id IN (%s)
 GROUP BY user_id, template_id HAVING COUNT(*) > ?`, table, placeholders(len(ids)))
			return query(ctx, db, q, append(args(ids), limit), func(rs *sql.Rows) error {
				var user, tpl, n int64
				if err := rs.Scan(&user, &tpl, &n); err != nil {
					return err
				}
				b.violations.add("user %d holds %d coupons of template %d, over its limit of %d", user, n, tpl, limit)
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("check per-user limits: %w", err)
		}
	}
	return nil
}

// checkRequestIDs makes sure no request ID is on two coupons, across
// every table (each table's unique key covers only itself).
func (b *bench) checkRequestIDs(ctx context.Context, ids []int64, v *Verify) error {
	seed := maphash.MakeSeed()
	seen := make(map[uint64]struct{}, v.Issued)
	err := b.eachTable(func(db *sql.DB, table int) error {
		q := fmt.Sprintf(`SELECT request_id FROM coupon_%04d WHERE template_id IN (%s)`, table, placeholders(len(ids)))
		var rid string
		return query(ctx, db, q, args(ids), func(rs *sql.Rows) error {
			if err := rs.Scan(&rid); err != nil {
				return err
			}
			v.Coupons++
			h := maphash.String(seed, rid)
			if _, dup := seen[h]; dup {
				b.violations.add("request_id %s is on two coupons", rid)
			}
			seen[h] = struct{}{}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("check request ids: %w", err)
	}
	return nil
}

// checkRetries looks up the coupon of each sampled replayed request: it
// must be the one the calls returned.
func (b *bench) checkRetries(ctx context.Context, t *tally, v *Verify) error {
	t.mu.Lock()
	sample := append([]claimed{}, t.retried...)
	t.mu.Unlock()
	for _, c := range sample {
		table := b.route.ShardMap.TableOf(c.req.UserId)
		db := b.shards[table/b.o.tablesPerShard]
		var code string
		err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT code FROM coupon_%04d WHERE request_id = ?`, table), c.req.RequestId).Scan(&code)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			b.violations.add("request %s returned coupon %s, which is not on record", c.req.RequestId, c.code)
		case err != nil:
			return fmt.Errorf("look up request %s: %w", c.req.RequestId, err)
		case code != c.code:
			b.violations.add("request %s returned coupon %s, the record says %s", c.req.RequestId, c.code, code)
		}
		v.RetriesChecked++
	}
	return nil
}

// eachTable calls f for every coupon table, in the database it lives in.
func (b *bench) eachTable(f func(db *sql.DB, table int) error) error {
	for i, db := range b.shards {
		for j := range b.o.tablesPerShard {
			if err := f(db, i*b.o.tablesPerShard+j); err != nil {
				return err
			}
		}
	}
	return nil
}

func query(ctx context.Context, db *sql.DB, q string, args []any, scan func(*sql.Rows) error) error {
	rs, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		if err := scan(rs); err != nil {
			return err
		}
	}
	return rs.Err()
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func args(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}
