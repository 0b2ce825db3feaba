package coordinator

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/opencoupon/coupon/sql/dtmstore"
)

// Migrate creates the MySQL store database of s if it does not exist and
// applies sql/dtmstore to it. It is idempotent.
func Migrate(ctx context.Context, s StoreConfig) error {
	if s.Driver != MySQL {
		return fmt.Errorf("migrate dtm store: the %s store needs no schema", s.Driver)
	}
	if !dbName.MatchString(s.DB) {
		return fmt.Errorf("migrate dtm store: bad database name %q", s.DB)
	}
	server := s
	server.DB = ""
	root, err := sql.Open("mysql", mysqlDSN(server))
	if err != nil {
		return fmt.Errorf("migrate dtm store: %w", err)
	}
	defer root.Close()
	if _, err := root.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+s.DB+"` CHARACTER SET utf8mb4"); err != nil {
		return fmt.Errorf("create dtm store database %s: %w", s.DB, err)
	}

	db, err := sql.Open("mysql", mysqlDSN(s))
	if err != nil {
		return fmt.Errorf("migrate dtm store: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	return dtmstore.Apply(ctx, db)
}
