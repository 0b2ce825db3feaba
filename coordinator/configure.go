package coordinator

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/dtm-labs/dtm/client/dtmcli/dtmimp"
	"github.com/dtm-labs/dtm/dtmsvr/config"
	"github.com/dtm-labs/dtm/dtmsvr/storage/registry"
	"github.com/go-sql-driver/mysql"
)

// storeTables are the tables of sql/dtmstore that DTM's MySQL store needs.
var storeTables = []string{"trans_global", "trans_branch_op", "kv"}

// Configure validates cfg, waits until its store answers (until ctx is
// done), checks it and applies cfg to DTM's global configuration and
// logging. It must be called before any DTM server code runs, once per
// process; Run calls it.
func Configure(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid coordinator config: %w", err)
	}
	routeLogs(log, cfg.LogLevel)

	if cfg.Store.Driver != MySQL {
		config.Config = dtmConfig(cfg, "")
		return waitStore(ctx, log)
	}
	// DTM's MySQL ping opens a pool it never closes, so this checks the
	// store with pools of its own.
	dbParams, err := checkMySQL(ctx, cfg.Store, log)
	if err != nil {
		return err
	}
	config.Config = dtmConfig(cfg, dbParams)
	return checkDTMDSN(ctx, cfg.Store)
}

// dtmConfig translates cfg into DTM's configuration. dbParams are extra
// MySQL DSN parameters, "" for none.
//
// DTM formats its MySQL DSN as
// "user:pass@tcp(host:port)/DB?charset=utf8mb4&parseTime=true&loc=Local&interpolateParams=true"
// and offers no way to add parameters, so they travel in the database name:
// "coupon_dtm?tx_isolation=...&charset=utf8mb4&connectionAttributes=" turns
// DTM's "?charset=utf8mb4" into the value of connectionAttributes, which the
// driver ignores (it has no "key:value" pair), and keeps DTM's other
// parameters.
func dtmConfig(cfg Config, dbParams string) config.Type {
	s := cfg.Store
	db := s.DB
	if dbParams != "" {
		db += "?" + dbParams + "&charset=utf8mb4&connectionAttributes="
	}
	sync := int64(0)
	if cfg.UpdateBranchSync {
		sync = 1
	}
	return config.Type{
		Store: config.Store{
			Driver:             s.Driver,
			Host:               s.Host,
			Port:               int64(s.Port),
			User:               s.User,
			Password:           s.Password,
			Db:                 db,
			Schema:             "public",
			MaxOpenConns:       int64(s.MaxOpenConns),
			MaxIdleConns:       int64(s.MaxIdleConns),
			ConnMaxLifeTime:    int64(s.ConnMaxLifetime / time.Minute),
			DataExpire:         seconds(s.DataExpire),
			FinishedDataExpire: seconds(s.FinishedDataExpire),
			RedisPrefix:        s.RedisPrefix,
		},
		TransCronInterval:             seconds(cfg.CronInterval),
		TimeoutToFail:                 seconds(cfg.TimeoutToFail),
		RetryInterval:                 seconds(cfg.RetryInterval),
		RequestTimeout:                seconds(cfg.RequestTimeout),
		HTTPPort:                      port(cfg.HTTPAddr),
		GrpcPort:                      port(cfg.GRPCAddr),
		MicroService:                  config.MicroService{Driver: "default"},
		HTTPMicroService:              config.HTTPMicroService{Driver: "default", RegistryOptions: "{}"},
		UpdateBranchSync:              sync,
		UpdateBranchAsyncGoroutineNum: int64(cfg.BranchFlushers),
		LogLevel:                      cfg.LogLevel.String(),
		Log:                           config.Log{Outputs: "stderr", RotationConfigJSON: "{}"},
		ConfigUpdateInterval:          3,
		AlertRetryLimit:               3,
	}
}

// port is addr's port number, which DTM only logs.
func port(addr string) int64 {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.ParseInt(p, 10, 64)
	return n
}

// mysqlDSN is the DSN of the store database without DTM's parameters.
func mysqlDSN(s StoreConfig) string {
	c := mysql.NewConfig()
	c.User, c.Passwd = s.User, s.Password
	c.Net, c.Addr = "tcp", net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	c.DBName = s.DB
	c.Timeout = 5 * time.Second
	return c.FormatDSN()
}

// checkMySQL waits for the store database, checks that its tables exist and
// returns the DSN parameters that set the configured isolation level (the
// variable is tx_isolation before MariaDB 11.1, transaction_isolation in
// MySQL 8).
func checkMySQL(ctx context.Context, s StoreConfig, log *slog.Logger) (string, error) {
	db, err := sql.Open("mysql", mysqlDSN(s))
	if err != nil {
		return "", fmt.Errorf("open dtm store %s: %w", s.DB, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if err := waitFor(ctx, log, "dtm store "+s.DB, func() error { return db.PingContext(ctx) }); err != nil {
		return "", err
	}

	var n int
	q := "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN (?, ?, ?)"
	if err := db.QueryRowContext(ctx, q, storeTables[0], storeTables[1], storeTables[2]).Scan(&n); err != nil {
		return "", fmt.Errorf("check dtm store tables in %s: %w", s.DB, err)
	}
	if n != len(storeTables) {
		return "", fmt.Errorf("dtm store %s lacks tables %v: apply sql/dtmstore (coordinator migrate)", s.DB, storeTables)
	}

	if s.Isolation == "" {
		return "", nil
	}
	variable, err := isolationVariable(ctx, db)
	if err != nil {
		return "", err
	}
	return variable + "=" + url.QueryEscape("'"+s.Isolation+"'"), nil
}

func isolationVariable(ctx context.Context, db *sql.DB) (string, error) {
	var v string
	var err error
	for _, name := range []string{"transaction_isolation", "tx_isolation"} {
		if err = db.QueryRowContext(ctx, "SELECT @@"+name).Scan(&v); err == nil {
			return name, nil
		}
	}
	return "", fmt.Errorf("find the isolation level variable of the dtm store server: %w", err)
}

// checkDTMDSN opens the store exactly as DTM will, to check that the
// parameters spliced into its DSN (see dtmConfig) work before DTM panics on
// them, and that they set the session's isolation level.
func checkDTMDSN(ctx context.Context, s StoreConfig) error {
	dsn := dtmimp.GetDsn(config.Config.Store.GetDBConf())
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return fmt.Errorf("open dtm store %s as dtm does: %w", s.DB, err)
	}
	defer db.Close()
	if s.Isolation == "" {
		return db.PingContext(ctx)
	}
	variable, err := isolationVariable(ctx, db)
	if err != nil {
		return err
	}
	var got string
	if err := db.QueryRowContext(ctx, "SELECT @@SESSION."+variable).Scan(&got); err != nil {
		return fmt.Errorf("read dtm store session isolation: %w", err)
	}
	if got != s.Isolation {
		return fmt.Errorf("dtm store session isolation is %s, want %s", got, s.Isolation)
	}
	return nil
}

// waitStore waits until DTM's store answers a ping. DTM's own wait loops
// forever; this one stops with ctx.
func waitStore(ctx context.Context, log *slog.Logger) error {
	return waitFor(ctx, log, "dtm store", func() (err error) {
		defer func() { // DTM's stores panic on errors (boltdb on open)
			if x := recover(); x != nil {
				err = panicError(x)
			}
		}()
		return registry.GetStore().Ping()
	})
}

// waitFor retries ping with backoff until it succeeds or ctx is done.
func waitFor(ctx context.Context, log *slog.Logger, what string, ping func() error) error {
	delay := 100 * time.Millisecond
	for {
		err := ping()
		if err == nil {
			return nil
		}
		log.Warn("waiting for "+what, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, 3*time.Second)
	}
}
