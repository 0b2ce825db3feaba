// Package dtmstore holds the DDL of the DTM coordinator's MySQL store and
// applies it. The DDL names no database, so one server can hold several
// stores (one per coordinator cluster, one per test).
package dtmstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// FS holds the numbered migrations, applied in name order.
//
//go:embed *.sql
var FS embed.FS

// Statements returns the DDL statements of every migration, in order.
func Statements() ([]string, error) {
	names, err := fs.Glob(FS, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list dtm store migrations: %w", err)
	}
	sort.Strings(names)
	var stmts []string
	for _, name := range names {
		b, err := FS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read dtm store migration %s: %w", name, err)
		}
		stmts = append(stmts, split(string(b))...)
	}
	return stmts, nil
}

// split cuts a script into statements at semicolons that end a line, after
// dropping whole-line "--" comments. The DDL here has no semicolon inside a
// string, so nothing smarter is needed.
func split(script string) []string {
	var b strings.Builder
	for line := range strings.Lines(script) {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		b.WriteString(line)
	}
	var stmts []string
	for part := range strings.SplitSeq(b.String(), ";\n") {
		if s := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(part), ";")); s != "" {
			stmts = append(stmts, s)
		}
	}
	return stmts
}

// Apply creates the store's tables in the current database of db (the one
// named in its DSN). It is idempotent.
func Apply(ctx context.Context, db *sql.DB) error {
	var name sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&name); err != nil {
		return fmt.Errorf("apply dtm store ddl: current database: %w", err)
	}
	if !name.Valid || name.String == "" {
		return fmt.Errorf("apply dtm store ddl: the DSN names no database")
	}
	stmts, err := Statements()
	if err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("apply dtm store ddl to %s: %w", name.String, err)
		}
	}
	return nil
}
