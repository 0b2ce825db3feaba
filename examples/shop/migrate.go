package shop

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"time"

	"github.com/go-sql-driver/mysql"
)

//go:embed sql
var schemas embed.FS

// Database roles: each has its own schema under sql/ and its own database.
const (
	OrderDB   = "order"
	PaymentDB = "payment"
)

// Open opens a pool of at most maxConns connections on dsn and checks it.
func Open(ctx context.Context, dsn string, maxConns int) (*sql.DB, error) {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return nil, fmt.Errorf("open mysql: %w", err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxLifetime(time.Hour)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ping mysql: %w", err)
	}
	return db, nil
}

// Migrate creates the database named in dsn if it is missing and applies the
// schema of role (OrderDB or PaymentDB). It is idempotent.
func Migrate(ctx context.Context, dsn, role string) error {
	files, err := fs.Glob(schemas, "sql/"+role+"/*.sql")
	if err != nil || len(files) == 0 {
		return fmt.Errorf("migrate: unknown database role %q", role)
	}
	// sql/both holds what each database has, the DTM barrier table: its
	// files take their place among the role's by number.
	both, err := fs.Glob(schemas, "sql/both/*.sql")
	if err != nil {
		return fmt.Errorf("migrate %s: %w", role, err)
	}
	files = append(files, both...)
	sort.Slice(files, func(i, j int) bool { return path.Base(files[i]) < path.Base(files[j]) })
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("migrate %s: parse dsn: %w", role, err)
	}
	if cfg.DBName == "" {
		return fmt.Errorf("migrate %s: dsn names no database", role)
	}
	name := cfg.DBName
	cfg.DBName = ""
	cfg.MultiStatements = true
	if err := execOn(ctx, cfg, "CREATE DATABASE IF NOT EXISTS `"+name+"` CHARACTER SET utf8mb4"); err != nil {
		return fmt.Errorf("migrate %s: create database %s: %w", role, name, err)
	}
	cfg.DBName = name
	for _, f := range files { // numbered files apply in order
		b, err := schemas.ReadFile(f)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", role, err)
		}
		if err := execOn(ctx, cfg, string(b)); err != nil {
			return fmt.Errorf("migrate %s: apply %s: %w", role, f, err)
		}
	}
	return nil
}

func execOn(ctx context.Context, cfg *mysql.Config, query string) error {
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	_, err = db.ExecContext(ctx, query)
	return err
}
