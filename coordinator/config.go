// Package coordinator runs the DTM transaction coordinator
// (github.com/dtm-labs/dtm v1.19.0) that the coupon service enlists in as a
// TCC participant, configured from our Config instead of DTM's own config
// file and environment.
//
// DTM keeps its configuration, store connections and workers in package
// globals, so a process runs at most one coordinator: it is its own binary
// (cmd/coordinator). This package must never import the standalone DTM client
// (github.com/dtm-labs/client): both register the same protobuf files.
//
// Several coordinators may share one MySQL or Redis store. Each serves
// requests, and each one's cron picks up any unfinished transaction whose
// next_cron_time has passed, so a coordinator that dies mid-transaction has
// its transactions finished by the others, or by itself after a restart.
package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"time"
)

// Store drivers.
const (
	MySQL  = "mysql"
	Redis  = "redis"
	BoltDB = "boltdb"
)

// Config is a coordinator's configuration. DefaultConfig documents the
// choices behind each default.
type Config struct {
	Store StoreConfig

	// HTTPAddr and GRPCAddr are where DTM's HTTP (and JSON-RPC) API and its
	// gRPC API listen. They default to loopback: the coordinator has no
	// authentication, so exposing it is a deliberate act.
	HTTPAddr string
	GRPCAddr string

	// LogLevel filters what DTM and its SQL layer log.
	LogLevel slog.Level

	// RetryInterval is the delay before the cron retries a transaction the
	// first time (then it doubles after each failure), and also the lease a
	// coordinator takes on a transaction it picks up: it must exceed the time
	// one pass over the branches can take. DTM stores it in whole seconds.
	RetryInterval time.Duration
	// TimeoutToFail is how long a prepared TCC, XA or workflow transaction
	// may stay unsubmitted before the cron aborts it.
	TimeoutToFail time.Duration
	// RequestTimeout bounds each call to a participant branch.
	RequestTimeout time.Duration

	// CronInterval is how long an idle cron worker waits before looking
	// for due transactions again; CronWorkers is how many run.
	CronInterval time.Duration
	CronWorkers  int

	// UpdateBranchSync writes each branch's result before going on. When
	// false (the default, as in DTM), results of the MySQL store are
	// written in batches by BranchFlushers goroutines; redis and boltdb
	// always write synchronously.
	UpdateBranchSync bool
	BranchFlushers   int

	// TransientRetries is how often a gRPC call that failed on a MySQL
	// deadlock or lock wait timeout is retried (dtm-labs/dtm#478).
	TransientRetries int

	// ShutdownTimeout bounds the graceful stop once Run's context is done.
	ShutdownTimeout time.Duration
}

// StoreConfig says where DTM keeps transactions.
type StoreConfig struct {
	// Driver is MySQL, Redis or BoltDB. BoltDB keeps ./dtm.bolt in the
	// working directory: it cannot be shared, so it suits a single
	// coordinator in development only.
	Driver string

	// Host, Port, User and Password reach the MySQL server or Redis (Host
	// may list Redis cluster nodes, comma separated, with their ports).
	Host     string
	Port     int
	User     string
	Password string

	// DB is the MySQL database holding the store (see sql/dtmstore).
	DB string
	// Isolation is the MySQL transaction isolation of the store's sessions,
	// e.g. "READ-COMMITTED"; empty keeps the server's default.
	Isolation string
	// MaxOpenConns, MaxIdleConns and ConnMaxLifetime size the MySQL pool.
	MaxOpenConns    int
	MaxIdleConns    int
	ConnMaxLifetime time.Duration

	// RedisPrefix starts every key the Redis store writes. It is required:
	// the Redis may be shared, and nothing outside the prefix is touched
	// (DTM's own "reset" would FLUSHALL; this package never calls it).
	RedisPrefix string
	// DataExpire is how long Redis and BoltDB keep a transaction;
	// FinishedDataExpire how long Redis keeps a finished one.
	DataExpire         time.Duration
	FinishedDataExpire time.Duration
}

// DefaultConfig returns the configuration of the local stack: a MySQL store
// in database coupon_dtm on 127.0.0.1:3306 as root, APIs on loopback.
//
// The defaults aim at durable, fast two-phase commits on a small box:
//
//   - Global state changes (prepared, submitted, succeed, aborting, failed)
//     are always written synchronously by DTM. Branch results go to MySQL in
//     batches (UpdateBranchSync false, 2 flushers): one multi-row upsert per
//     up to 20 results instead of a locking transaction per branch. A crash
//     can lose only the results of branches whose transaction has not
//     finished yet; the cron then calls those Confirm/Cancel branches again,
//     which TCC branches must tolerate anyway (DTM's barrier makes them
//     idempotent). Nothing is lost once a transaction's status is final.
//   - READ-COMMITTED store sessions, against dtm-labs/dtm#478: MariaDB may
//     plan DTM's status change (UPDATE ... WHERE status=? AND gid=?, as in
//     Submit) as a range scan of the (status, next_cron_time) index, which
//     under its default REPEATABLE-READ next-key-locks every transaction in
//     that status until commit, so concurrent Submits deadlock; the batched
//     upserts into trans_branch_op deadlock on gap locks the same way.
//     READ-COMMITTED takes no such gap locks, and its semi-consistent reads
//     skip non-matching rows without waiting for their locks. DTM's writes
//     stay correct under it: each is one conditional statement, or a
//     SELECT ... FOR UPDATE of the global row. Deadlocks that remain are
//     retried (TransientRetries 3) where the call can be repeated safely.
//   - A pool of 30 connections (MariaDB allows 151 in all, shared by two
//     coordinators and the services), with as many kept idle so a burst
//     opens none; DTM's own default of 500 would exhaust the server.
//   - RetryInterval 10s, TimeoutToFail 35s and RequestTimeout 3s are DTM's
//     defaults: the 10s lease comfortably exceeds a pass over a few 3s
//     branch calls, so two coordinators rarely work on one transaction.
//   - Two cron workers polling every 3s (with jitter) keep recovery after a
//     crash quick without loading an idle store; a busy worker polls again
//     at once.
//   - Logging at warn: DTM logs every request and SQL statement at info
//     and debug, which costs more than the transactions at 800+ tx/s.
func DefaultConfig() Config {
	return Config{
		Store: StoreConfig{
			Driver:             MySQL,
			Host:               "127.0.0.1",
			Port:               3306,
			User:               "root",
			DB:                 "coupon_dtm",
			Isolation:          "READ-COMMITTED",
			MaxOpenConns:       30,
			MaxIdleConns:       30,
			ConnMaxLifetime:    5 * time.Minute,
			RedisPrefix:        "{coupon-dtm}",
			DataExpire:         7 * 24 * time.Hour,
			FinishedDataExpire: 24 * time.Hour,
		},
		HTTPAddr:         "127.0.0.1:36789",
		GRPCAddr:         "127.0.0.1:36790",
		LogLevel:         slog.LevelWarn,
		RetryInterval:    10 * time.Second,
		TimeoutToFail:    35 * time.Second,
		RequestTimeout:   3 * time.Second,
		CronInterval:     3 * time.Second,
		CronWorkers:      2,
		UpdateBranchSync: false,
		BranchFlushers:   2,
		TransientRetries: 3,
		ShutdownTimeout:  10 * time.Second,
	}
}

// The database name is spliced into DTM's DSN, so it is kept to characters
// that need no quoting there or in SQL.
var dbName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

var isolations = map[string]bool{
	"":                 true,
	"READ-UNCOMMITTED": true,
	"READ-COMMITTED":   true,
	"REPEATABLE-READ":  true,
	"SERIALIZABLE":     true,
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	s := c.Store
	switch s.Driver {
	case MySQL:
		if s.Host == "" || s.Port <= 0 || s.User == "" {
			bad("store: mysql needs host, port and user")
		}
		if !dbName.MatchString(s.DB) {
			bad("store.db %q: want 1-64 letters, digits or underscores", s.DB)
		}
		if !isolations[s.Isolation] {
			bad("store.isolation %q: want READ-COMMITTED, REPEATABLE-READ, READ-UNCOMMITTED, SERIALIZABLE or empty", s.Isolation)
		}
		if s.MaxOpenConns < 1 || s.MaxIdleConns < 0 || s.MaxIdleConns > s.MaxOpenConns {
			bad("store: want 1 <= max_open_conns and 0 <= max_idle_conns <= max_open_conns, got %d and %d", s.MaxOpenConns, s.MaxIdleConns)
		}
		if s.ConnMaxLifetime < time.Minute {
			bad("store.conn_max_lifetime %s: want at least 1m", s.ConnMaxLifetime)
		}
	case Redis:
		if s.Host == "" || s.Port <= 0 {
			bad("store: redis needs host and port")
		}
		if s.RedisPrefix == "" {
			bad("store.redis_prefix: required, the Redis may be shared")
		}
		if s.DataExpire < time.Second || s.FinishedDataExpire < time.Second {
			bad("store: data_expire and finished_data_expire must be at least 1s")
		}
	case BoltDB:
		if s.DataExpire < time.Second {
			bad("store.data_expire: must be at least 1s")
		}
	default:
		bad("store.driver %q: want %s, %s or %s", s.Driver, MySQL, Redis, BoltDB)
	}

	for name, addr := range map[string]string{"http_addr": c.HTTPAddr, "grpc_addr": c.GRPCAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s %q: %v", name, addr, err)
		}
	}
	if c.HTTPAddr == c.GRPCAddr {
		bad("http_addr and grpc_addr are both %q", c.HTTPAddr)
	}
	if c.RequestTimeout < time.Second {
		bad("request_timeout %s: want at least 1s", c.RequestTimeout)
	}
	if c.RetryInterval <= c.RequestTimeout {
		bad("retry_interval %s: must exceed request_timeout %s, it is the lease on a transaction being processed", c.RetryInterval, c.RequestTimeout)
	}
	if c.TimeoutToFail < c.RetryInterval {
		bad("timeout_to_fail %s: must be at least retry_interval %s", c.TimeoutToFail, c.RetryInterval)
	}
	if c.CronInterval < 10*time.Millisecond {
		bad("cron_interval %s: want at least 10ms", c.CronInterval)
	}
	if c.CronWorkers < 1 || c.BranchFlushers < 1 {
		bad("cron_workers and branch_flushers must be at least 1")
	}
	if c.TransientRetries < 0 {
		bad("transient_retries must not be negative")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout must be positive")
	}
	return errors.Join(errs...)
}

// seconds rounds d up to DTM's unit, whole seconds.
func seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
