package claimbench

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/participant"
	couponredis "github.com/opencoupon/coupon/participant/redis"
)

// baselineStock is what the baseline's counter starts with: more than any run takes.
const baselineStock = int64(1) << 40

// baseline is the bare work of a claim done by this process at the same
// concurrency, without gRPC or the service: one Redis Lua decrement and one
// single-row INSERT into the user's shard table. It writes to scratch
// tables bench_baseline_NNNN (made like coupon_NNNN) and a scratch key
// under --bench-prefix, and removes them afterwards.
func (b *bench) baseline(ctx context.Context) (*Result, error) {
	o := b.o
	pools := make([]*sql.DB, len(o.mysqlShards))
	defer func() {
		for _, db := range pools {
			if db != nil {
				db.Close()
			}
		}
	}()
	for i, dsn := range o.mysqlShards {
		db, err := openDB(ctx, dsn, o.baselinePool)
		if err != nil {
			return nil, fmt.Errorf("open shard %d: %w", i, err)
		}
		pools[i] = db
	}
	tables := len(pools) * o.tablesPerShard
	dbOf := func(table int) *sql.DB { return pools[table/o.tablesPerShard] }
	drop := func(ctx context.Context) error {
		for t := range tables {
			if _, err := dbOf(t).ExecContext(ctx, fmt.Sprintf("DROP TABLE IF EXISTS bench_baseline_%04d", t)); err != nil {
				return fmt.Errorf("drop bench_baseline_%04d: %w", t, err)
			}
		}
		return nil
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = drop(cctx)
	}()
	if err := drop(ctx); err != nil { // left over from an interrupted run
		return nil, err
	}
	insert := make([]string, tables)
	for t := range tables {
		if _, err := dbOf(t).ExecContext(ctx, fmt.Sprintf("CREATE TABLE bench_baseline_%04d LIKE coupon_%04d", t, t)); err != nil {
			return nil, fmt.Errorf("create bench_baseline_%04d: %w", t, err)
		}
		insert[t] = fmt.Sprintf(`INSERT INTO bench_baseline_%04d (id, code, template_id, campaign_id, user_id,
 request_id, status, claimed_at, expire_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)`, t)
	}

	// The service's default Redis pool (redis.pool_size).
	rdb := app.NewRedis(app.RedisConfig{Addrs: o.redis, PoolSize: 128})
	defer rdb.Close()
	key := o.benchPrefix + b.runID + ":stock"
	if err := rdb.HSet(ctx, key, "n", baselineStock, "g", token()).Err(); err != nil {
		return nil, fmt.Errorf("set baseline stock: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rdb.Del(cctx, key).Err()
	}()
	idgen, err := participant.NewIDGen(0, nil)
	if err != nil {
		return nil, err
	}

	ph := b.phase()
	ph.pid = 0 // the work runs here, not in the service
	res, err := ph.run(ctx, func(int) unit {
		return func(ctx context.Context, rec *recorder) {
			start := time.Now()
			ctx, cancel := context.WithTimeout(ctx, o.timeout)
			defer cancel()
			if err := couponredis.TakeScript().Run(ctx, rdb, []string{key}).Err(); err != nil {
				rec.observe(start, err)
				return
			}
			id, user := idgen.Next(), b.newUser()
			t := b.route.ShardMap.TableOf(user)
			now := time.Now().UTC()
			_, err := dbOf(t).ExecContext(ctx, insert[t], id, participant.CouponCode(id), 1, b.campaignID, user,
				b.requestID(), participant.CouponAvailable, now, now.Add(30*24*time.Hour), now)
			if rec.observe(start, err) && err == nil {
				rec.ok++
			}
		}
	})
	if err != nil {
		return nil, err
	}
	res.Kind, res.Scenario, res.Pool = "baseline", scenarioBaseline, o.baselinePool
	if len(res.Errors) == 0 {
		if err := b.checkBaseline(ctx, rdb, key, tables, dbOf); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// checkBaseline makes sure the baseline did its work: one row per unit taken.
func (b *bench) checkBaseline(ctx context.Context, rdb goredis.UniversalClient, key string, tables int, dbOf func(int) *sql.DB) error {
	left, err := rdb.HGet(ctx, key, "n").Int64()
	if err != nil {
		return fmt.Errorf("read baseline stock: %w", err)
	}
	var rows int64
	for t := range tables {
		var n int64
		if err := dbOf(t).QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) FROM bench_baseline_%04d", t)).Scan(&n); err != nil {
			return fmt.Errorf("count bench_baseline_%04d: %w", t, err)
		}
		rows += n
	}
	if taken := baselineStock - left; taken != rows {
		b.violations.add("baseline: %d units taken but %d rows written", taken, rows)
	}
	return nil
}
