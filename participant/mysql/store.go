// Package mysql stores the coupon service's data in MySQL (MariaDB): the
// catalog (campaigns, templates, stock operations) in one main database and
// coupon records sharded by user ID over many tables in several databases.
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
	// ObserveBatch, if set, is told the size of every claim batch written
	// (for metrics). It must be quick and safe for concurrent use.
	ObserveBatch func(size int)
}

// Store is the MySQL side of the service.
type Store struct {
	main     *sql.DB
	shards   []*sql.DB
	perShard int
	batchers []*batcher
	wg       sync.WaitGroup
	// quit ends the batchers; stopped is closed once they have all
	// returned. The queues are never closed: a claim may race Close (a
	// handler answered at its deadline still runs), and must then fail as
	// not written rather than send on a closed channel.
	quit     chan struct{}
	stopped  chan struct{}
	closeOne sync.Once
	observe  func(size int)
	smap     shardMap
}

// Open connects to every database and checks that each answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
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
	s := &Store{perShard: cfg.TablesPerShard, observe: cfg.ObserveBatch, smap: smap}
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
	if s.main, err = open(cfg.MainDSN); err != nil {
		return nil, fmt.Errorf("open main database: %w", err)
	}
	for i, dsn := range cfg.ShardDSNs {
		db, err := open(dsn)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open shard %d: %w", i, err)
		}
		s.shards = append(s.shards, db)
	}
	stored, haveStored, err := loadMap(ctx, s.main)
	if err == nil {
		err = s.smap.resolve(cfg, stored, haveStored)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("shard map: %w", err)
	}
	s.startBatchers()
	return s, nil
}

// Close stops the claim batchers (after the claims already queued) and
// closes every pool.
func (s *Store) Close() error {
	s.closeOne.Do(func() {
		if s.quit != nil {
			close(s.quit)
			<-s.stopped
		}
	})
	var errs []error
	if s.main != nil {
		errs = append(errs, s.main.Close())
	}
	for _, db := range s.shards {
		errs = append(errs, db.Close())
	}
	return errors.Join(errs...)
}

// Main is the main database.
func (s *Store) Main() *sql.DB { return s.main }

// Tables is the total number of coupon tables.
func (s *Store) Tables() int { return s.perShard * len(s.shards) }

// Shard is where one user's coupons live.
type Shard struct {
	DB    *sql.DB
	Index int // shard database number
	Table int // global table number
}

// Suffix is the table-name suffix, e.g. "0007".
func (sh Shard) Suffix() string { return fmt.Sprintf("%04d", sh.Table) }

// ShardOf routes a user to their shard through the shard map.
func (s *Store) ShardOf(userID int64) Shard { return s.shardOfKey(userID) }

// ShardDBs lists the shard databases in order.
func (s *Store) ShardDBs() []*sql.DB { return s.shards }

// TablesOf lists the global table numbers in shard database i.
func (s *Store) TablesOf(i int) []int {
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
