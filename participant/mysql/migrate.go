package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"text/template"
	"time"

	migrations "github.com/opencoupon/coupon/sql"
)

// Migrate applies the embedded migrations: main/ to the main database and
// shard/ to every shard database. It is safe to run again and again: each
// file is recorded in schema_migrations once applied, and shard files are
// recorded with their table range, so adding tables re-applies them (their
// statements are all CREATE ... IF NOT EXISTS). Last it stores the shard
// map, refusing one that would move a slot holding rows.
func (s *Stores) Migrate(ctx context.Context) error { return s.shards.migrate(ctx) }

func (s *shards) migrate(ctx context.Context) error {
	if err := apply(ctx, s.main, "main", nil); err != nil {
		return fmt.Errorf("migrate main database: %w", err)
	}
	for i, db := range s.dbs {
		tables := make([]string, 0, s.perShard)
		for _, t := range s.tablesOf(i) {
			tables = append(tables, fmt.Sprintf("%04d", t))
		}
		if err := apply(ctx, db, "shard", tables); err != nil {
			return fmt.Errorf("migrate shard %d: %w", i, err)
		}
	}
	return s.saveShardMap(ctx)
}

func apply(ctx context.Context, db *sql.DB, dir string, tables []string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
 version VARCHAR(255) NOT NULL PRIMARY KEY, applied_at DATETIME(6) NOT NULL) ENGINE=InnoDB`); err != nil {
		return err
	}
	files, err := fs.Glob(migrations.FS, dir+"/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		version := path.Base(f)
		if tables != nil {
			version += fmt.Sprintf("@%s-%s", tables[0], tables[len(tables)-1])
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		src, err := fs.ReadFile(migrations.FS, f)
		if err != nil {
			return err
		}
		if tables != nil {
			tpl, err := template.New(f).Parse(string(src))
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			var b bytes.Buffer
			if err := tpl.Execute(&b, map[string]any{"Tables": tables}); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			src = b.Bytes()
		}
		for _, stmt := range statements(string(src)) {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
		if _, err := db.ExecContext(ctx, `INSERT IGNORE INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
			version, time.Now().UTC()); err != nil {
			return err
		}
	}
	return nil
}

// statements splits a file on semicolons that end a line, dropping
// comment-only lines.
func statements(src string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}
