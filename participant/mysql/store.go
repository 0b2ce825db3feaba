// Package mysql stores the coupon service's data in MySQL (MariaDB): the
// catalog (campaigns, templates, stock operations) in one main database and
// coupon records sharded by user ID over many tables in several databases.
//
// Each port of participant has its own store type (Catalog, Coupons,
// Branches, Phones, Expiry) and ShardMap answers where rows live; they
// share one set of pools, which never leave the package.
//
// Users hash to logical slots, slots belong to tables and tables to shard
// databases (the shard map, shardmap.go, stored in the main database).
// Table names carry the global table number, so a table keeps its name if
// it moves to another database.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/opencoupon/coupon/participant"
)

// Config says where the data lives.
type Config struct {
	MainDSN   string
	ShardDSNs []string
	// TablesPerShard coupon tables live in every shard database.
	TablesPerShard int
	// Slots is the number of logical slots users hash to (DefaultSlots
	// when 0); it is fixed at the first migrate.
	Slots int
	// SlotMap assigns slot ranges to tables; empty means slot s belongs to
	// table s mod (TablesPerShard × shards). See shardmap.go.
	SlotMap []SlotRange
	// Pool sizes per database; MariaDB's default max_connections is 151.
	MaxOpenConns int
	MaxIdleConns int
	// Events turns the transactional outbox on: every change writes its
	// lifecycle events (coupon_outbox) in its own transaction, for the
	// relay to publish. Off, nothing is written there.
	Events bool
	// ObserveBatch, if set, is told the size of every claim batch written
	// (for metrics). It must be quick and safe for concurrent use.
	ObserveBatch func(size int)
}

// Stores are the MySQL side of the service: one store per port, all over
// the same pools and shard map. Open them with Open, close them with Close.
type Stores struct {
	Catalog  *Catalog
	Coupons  *Coupons
	Branches *Branches
	Phones   *Phones
	Expiry   *Expiry
	ShardMap *ShardMap
	Outbox   *Outbox

	shards *shards
}

// shards is what the stores share: the main database, the shard databases
// and the map that routes users and phones to their tables.
type shards struct {
	main     *sql.DB
	dbs      []*sql.DB
	perShard int
	smap     shardMap
	events   bool // write the outbox (Config.Events)
}

// Open connects to every database, checks that each answers and reads the
// stored shard map.
func Open(ctx context.Context, cfg Config) (*Stores, error) {
	if cfg.MainDSN == "" || len(cfg.ShardDSNs) == 0 {
		return nil, errors.New("mysql: main and at least one shard DSN are required")
	}
	if cfg.TablesPerShard <= 0 || cfg.TablesPerShard > 1000 {
		return nil, fmt.Errorf("mysql: tables per shard %d out of range 1..1000", cfg.TablesPerShard)
	}
	if cfg.MaxOpenConns <= 0 {
		cfg.MaxOpenConns = 20
	}
	if cfg.MaxIdleConns <= 0 || cfg.MaxIdleConns > cfg.MaxOpenConns {
		cfg.MaxIdleConns = cfg.MaxOpenConns
	}
	smap, err := configuredMap(cfg)
	if err != nil {
		return nil, err
	}
	sh := &shards{perShard: cfg.TablesPerShard, smap: smap, events: cfg.Events}
	open := func(dsn string) (*sql.DB, error) {
		c, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("parse dsn: %w", err)
		}
		c.ParseTime = true
		c.Loc = time.UTC
		c.InterpolateParams = true
		// Claim batches send their writes as one multi-statement round trip.
		c.MultiStatements = true
		if c.Timeout == 0 {
			c.Timeout = 3 * time.Second
		}
		conn, err := mysql.NewConnector(c)
		if err != nil {
			return nil, err
		}
		db := sql.OpenDB(conn)
		db.SetMaxOpenConns(cfg.MaxOpenConns)
		db.SetMaxIdleConns(cfg.MaxIdleConns)
		db.SetConnMaxLifetime(30 * time.Minute)
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("ping %s/%s: %w", c.Addr, c.DBName, err)
		}
		return db, nil
	}
	if sh.main, err = open(cfg.MainDSN); err != nil {
		return nil, fmt.Errorf("open main database: %w", err)
	}
	for i, dsn := range cfg.ShardDSNs {
		db, err := open(dsn)
		if err != nil {
			sh.close()
			return nil, fmt.Errorf("open shard %d: %w", i, err)
		}
		sh.dbs = append(sh.dbs, db)
	}
	stored, haveStored, err := loadMap(ctx, sh.main)
	if err == nil {
		err = sh.smap.resolve(cfg, stored, haveStored)
	}
	if err != nil {
		sh.close()
		return nil, fmt.Errorf("shard map: %w", err)
	}
	s := &Stores{
		Catalog:  &Catalog{sh},
		Coupons:  &Coupons{shards: sh, observe: cfg.ObserveBatch},
		Branches: &Branches{sh},
		Phones:   &Phones{sh},
		Expiry:   &Expiry{sh},
		ShardMap: &ShardMap{sh},
		Outbox:   &Outbox{sh},
		shards:   sh,
	}
	s.Coupons.startBatchers()
	return s, nil
}

// Close stops the claim batchers (after the claims already queued) and
// closes every pool.
func (s *Stores) Close() error {
	s.Coupons.stopBatchers()
	return s.shards.close()
}

func (s *shards) close() error {
	var errs []error
	if s.main != nil {
		errs = append(errs, s.main.Close())
	}
	for _, db := range s.dbs {
		errs = append(errs, db.Close())
	}
	return errors.Join(errs...)
}

// Ping checks that the main database and every shard database answer, all
// at once, and names those that do not.
func (s *Stores) Ping(ctx context.Context) error {
	names := []string{"mysql main"}
	dbs := []*sql.DB{s.shards.main}
	for i, db := range s.shards.dbs {
		names = append(names, fmt.Sprintf("mysql shard %d", i))
		dbs = append(dbs, db)
	}
	errs := make([]error, len(dbs))
	var wg sync.WaitGroup
	for i, db := range dbs {
		wg.Go(func() {
			if err := db.PingContext(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: %w", names[i], err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// PoolStats reports each pool's statistics by database name: "main",
// "shard_0", "shard_1", ...
func (s *Stores) PoolStats() map[string]sql.DBStats {
	out := map[string]sql.DBStats{"main": s.shards.main.Stats()}
	for i, db := range s.shards.dbs {
		out[fmt.Sprintf("shard_%d", i)] = db.Stats()
	}
	return out
}

// PoolCollectors export every pool's statistics to Prometheus, labelled
// as PoolStats names them.
func (s *Stores) PoolCollectors() []prometheus.Collector {
	cs := []prometheus.Collector{collectors.NewDBStatsCollector(s.shards.main, "main")}
	for i, db := range s.shards.dbs {
		cs = append(cs, collectors.NewDBStatsCollector(db, fmt.Sprintf("shard_%d", i)))
	}
	return cs
}

// shard is where one user's (or phone's) rows live.
type shard struct {
	db    *sql.DB
	index int // shard database number
	table int // global table number
}

// suffix is the table-name suffix, e.g. "0007".
func (sh shard) suffix() string { return fmt.Sprintf("%04d", sh.table) }

// tables is the total number of coupon tables.
func (s *shards) tables() int { return s.perShard * len(s.dbs) }

// tablesOf lists the global table numbers in shard database i.
func (s *shards) tablesOf(i int) []int {
	ts := make([]int, s.perShard)
	for j := range ts {
		ts[j] = i*s.perShard + j
	}
	return ts
}

// mysqlErr classifies driver errors.
func isDuplicate(err error) (key string, ok bool) {
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1062 {
		return me.Message, true
	}
	return "", false
}

// isRetryable: the server rolled the transaction back (deadlock, lock wait).
func isRetryable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// wrap turns an infrastructure error into a domain error: server-side
// errors stay internal, lost connections and deadlines become transient.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	var pe *participant.Error
	if errors.As(err, &pe) {
		return err
	}
	var me *mysql.MySQLError
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, mysql.ErrInvalidConn), errors.Is(err, sql.ErrConnDone), errors.As(err, &ne):
		return participant.Unavailable(what, err)
	case errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205 || me.Number == 1040):
		return participant.Unavailable(what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func notFound(what string, id any) error {
	return participant.Errorf(participant.ENOTFOUND, participant.ReasonNotFound, "%s %v not found", what, id)
}

func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}
