package reconcile

import (
	"bufio"
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

//go:embed sql/*.sql
var migrations embed.FS

// OpenDB opens a MySQL pool of at most maxConns on dsn, with the settings
// the reconciler relies on (UTC times as time.Time) and checks it answers.
func OpenDB(ctx context.Context, dsn string, maxConns int) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	cfg.ParseTime, cfg.Loc, cfg.InterpolateParams = true, time.UTC, true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql %s: %w", cfg.Addr, err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxLifetime(time.Hour)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mysql %s/%s: %w", cfg.Addr, cfg.DBName, err)
	}
	return db, nil
}

// OpenState opens the state database named in dsn, creating it if it is
// missing, and applies the reconciler's migrations (idempotent).
func OpenState(ctx context.Context, dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("state database: parse dsn: %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("state database: the dsn names no database")
	}
	server := cfg.Clone()
	server.DBName = ""
	root, err := OpenDB(ctx, server.FormatDSN(), 1)
	if err != nil {
		return nil, fmt.Errorf("state database: %w", err)
	}
	_, err = root.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+strings.ReplaceAll(cfg.DBName, "`", "``")+"` CHARACTER SET utf8mb4")
	_ = root.Close()
	if err != nil {
		return nil, fmt.Errorf("state database: create %s: %w", cfg.DBName, err)
	}
	if err := Migrate(ctx, dsn); err != nil {
		return nil, err
	}
	db, err := OpenDB(ctx, dsn, 4)
	if err != nil {
		return nil, fmt.Errorf("state database: %w", err)
	}
	return db, nil
}

// Migrate applies reconcile/sql/*.sql in order, each file in one
// multi-statement round trip; every statement is idempotent.
func Migrate(ctx context.Context, dsn string) error {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("migrate: parse dsn: %w", err)
	}
	cfg.MultiStatements = true
	db, err := OpenDB(ctx, cfg.FormatDSN(), 1)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer db.Close()
	files, err := fs.Glob(migrations, "sql/*.sql")
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := migrations.ReadFile(f)
		if err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, string(b)); err != nil {
			return fmt.Errorf("migrate %s: %w", f, err)
		}
	}
	return nil
}

// Run statuses.
const (
	RunRunning = "running"
	RunDone    = "done"
	RunFailed  = "failed"
)

// Run is one reconciliation run as recorded in reconcile_run.
type Run struct {
	ID          int64                  `json:"id"`
	Date        string                 `json:"date"`
	AsOf        time.Time              `json:"as_of"`
	SourceKey   string                 `json:"source_key"`
	Status      string                 `json:"status"`
	Findings    int64                  `json:"findings"`
	Open        int64                  `json:"open"`
	Resolved    int64                  `json:"resolved"`
	MoneyAtRisk int64                  `json:"money_at_risk"`
	Pending     int64                  `json:"pending"`
	Totals      map[string]*ClassTotal `json:"totals"`
	RowsRead    int64                  `json:"rows_read"`
	ReportPath  string                 `json:"report_path"`
	Error       string                 `json:"error,omitempty"`
	Host        string                 `json:"host"`
	StartedAt   time.Time              `json:"started_at"`
	FinishedAt  *time.Time             `json:"finished_at,omitempty"`
}

// StartRun records a run as running and sets its ID.
func StartRun(ctx context.Context, db *sql.DB, r *Run) error {
	r.Status = RunRunning
	res, err := db.ExecContext(ctx, `INSERT INTO reconcile_run (run_date, as_of, source_key, status, totals, report_path, host, started_at)
		VALUES (?, ?, ?, ?, '{}', ?, ?, ?)`, r.Date, r.AsOf.UTC(), r.SourceKey, r.Status, r.ReportPath, r.Host, r.StartedAt.UTC())
	if err != nil {
		return fmt.Errorf("record run: %w", err)
	}
	r.ID, err = res.LastInsertId()
	return err
}

// FinishRun records the outcome of a run: done with res, or failed with runErr.
func FinishRun(ctx context.Context, db *sql.DB, r *Run, res *Result, runErr error, now time.Time) error {
	r.Status = RunDone
	if runErr != nil {
		r.Status, r.Error = RunFailed, truncate(runErr.Error(), 1024)
	}
	if res != nil {
		r.Findings, r.Open, r.Resolved, r.MoneyAtRisk, r.Pending = res.Findings, res.Open, res.Resolved, res.MoneyAtRisk, res.Pending
		r.Totals, r.RowsRead = res.Totals, res.Rows.Orders+res.Rows.Payments+res.Rows.Ledger
	}
	totals, err := json.Marshal(r.Totals)
	if err != nil {
		return err
	}
	t := now.UTC()
	r.FinishedAt = &t
	_, err = db.ExecContext(ctx, `UPDATE reconcile_run SET status = ?, findings = ?, open_findings = ?, resolved = ?, money_at_risk = ?,
		pending = ?, totals = ?, rows_read = ?, report_path = ?, error = ?, finished_at = ? WHERE id = ?`,
		r.Status, r.Findings, r.Open, r.Resolved, r.MoneyAtRisk, r.Pending, string(totals), r.RowsRead, r.ReportPath, r.Error, t, r.ID)
	if err != nil {
		return fmt.Errorf("record run %d: %w", r.ID, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// Page asks for one page of a listing, newest first: Size items (default
// 50, at most 500) after the cursor After (empty: from the newest).
type Page struct {
	Size  int
	After string
}

// ListRuns lists recorded runs, newest first, and returns the cursor of the
// next page ("" after the last). For the operator console.
func ListRuns(ctx context.Context, db *sql.DB, page Page) ([]Run, string, error) {
	size := page.Size
	if size <= 0 {
		size = 50
	}
	size = min(size, 500)
	before := int64(1<<63 - 1)
	if page.After != "" {
		v, err := strconv.ParseInt(page.After, 10, 64)
		if err != nil || v <= 0 {
			return nil, "", fmt.Errorf("list runs: bad page cursor %q", page.After)
		}
		before = v
	}
	rows, err := db.QueryContext(ctx, `SELECT `+runCols+` FROM reconcile_run WHERE id < ? ORDER BY id DESC LIMIT ?`, before, size+1)
	if err != nil {
		return nil, "", fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var runs []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list runs: %w", err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list runs: %w", err)
	}
	next := ""
	if len(runs) > size {
		runs = runs[:size]
		next = strconv.FormatInt(runs[size-1].ID, 10)
	}
	return runs, next, nil
}

// GetRun reads one run.
func GetRun(ctx context.Context, db *sql.DB, id int64) (Run, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+runCols+` FROM reconcile_run WHERE id = ?`, id)
	if err != nil {
		return Run{}, fmt.Errorf("get run %d: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Run{}, fmt.Errorf("get run %d: %w", id, err)
		}
		return Run{}, fmt.Errorf("get run %d: %w", id, sql.ErrNoRows)
	}
	return scanRun(rows)
}

const runCols = `id, run_date, as_of, source_key, status, findings, open_findings, resolved, money_at_risk, pending, totals,
	rows_read, report_path, error, host, started_at, finished_at`

func scanRun(rows *sql.Rows) (Run, error) {
	var r Run
	var date time.Time
	var totals string
	var finished sql.NullTime
	err := rows.Scan(&r.ID, &date, &r.AsOf, &r.SourceKey, &r.Status, &r.Findings, &r.Open, &r.Resolved, &r.MoneyAtRisk, &r.Pending,
		&totals, &r.RowsRead, &r.ReportPath, &r.Error, &r.Host, &r.StartedAt, &finished)
	if err != nil {
		return r, err
	}
	r.Date = date.Format(time.DateOnly)
	if finished.Valid {
		r.FinishedAt = &finished.Time
	}
	if err := json.Unmarshal([]byte(totals), &r.Totals); err != nil {
		return r, fmt.Errorf("run %d totals: %w", r.ID, err)
	}
	return r, nil
}

// SavePending stores a run's pending.jsonl (read from r) for the next day.
func SavePending(ctx context.Context, db *sql.DB, runID int64, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 16<<20)
	const batch = 200
	var args []any
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		q := `INSERT INTO reconcile_pending (run_id, order_no, since, body) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?,?,?,?),", n), ",") + ` ON DUPLICATE KEY UPDATE body = VALUES(body)`
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("save pending: %w", err)
		}
		args, n = args[:0], 0
		return nil
	}
	for sc.Scan() {
		var p struct {
			OrderNo string `json:"order_no"`
			Since   string `json:"since"`
		}
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return fmt.Errorf("save pending: %w", err)
		}
		args = append(args, runID, p.OrderNo, p.Since, sc.Text())
		if n++; n == batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("save pending: %w", err)
	}
	return flush()
}

// PreviousPending returns the pending orders of the latest finished run of
// the day before date over the same books, and that run's ID (0: none).
func PreviousPending(ctx context.Context, db *sql.DB, date, sourceKey string) ([]Pending, int64, error) {
	d, err := Day(date, time.UTC)
	if err != nil {
		return nil, 0, err
	}
	prev := d.AddDate(0, 0, -1).Format(time.DateOnly)
	var runID int64
	err = db.QueryRowContext(ctx, `SELECT id FROM reconcile_run WHERE run_date = ? AND source_key = ? AND status = ? ORDER BY id DESC LIMIT 1`,
		prev, sourceKey, RunDone).Scan(&runID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("previous run: %w", err)
	}
	out, err := RunPending(ctx, db, runID)
	if err != nil {
		return nil, 0, err
	}
	return out, runID, nil
}

// RunPending returns the orders a run left pending, by order number.
func RunPending(ctx context.Context, db *sql.DB, runID int64) ([]Pending, error) {
	rows, err := db.QueryContext(ctx, `SELECT body FROM reconcile_pending WHERE run_id = ? ORDER BY order_no`, runID)
	if err != nil {
		return nil, fmt.Errorf("pending of run %d: %w", runID, err)
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("pending of run %d: %w", runID, err)
		}
		p, err := ParsePending([]byte(body))
		if err != nil {
			return nil, fmt.Errorf("pending of run %d: %w", runID, err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ParsePending reads one line of pending.jsonl, checking its statuses.
func ParsePending(b []byte) (Pending, error) {
	var p Pending
	if err := json.Unmarshal(b, &p); err != nil {
		return p, err
	}
	if p.OrderNo == "" {
		return p, errors.New("pending order without order_no")
	}
	if _, err := Day(p.Since, time.UTC); err != nil {
		return p, fmt.Errorf("pending order %s: since: %w", p.OrderNo, err)
	}
	if o := p.Records.Order; o != nil {
		if _, ok := ParseOrderStatus(o.Status); !ok {
			return p, fmt.Errorf("pending order %s: order status %q", p.OrderNo, o.Status)
		}
	}
	for _, x := range p.Records.Payments {
		if _, ok := ParsePaymentStatus(x.Status); !ok {
			return p, fmt.Errorf("pending order %s: payment status %q", p.OrderNo, x.Status)
		}
	}
	for _, x := range p.Records.Ledger {
		if _, ok := ParseOp(x.Op); !ok {
			return p, fmt.Errorf("pending order %s: ledger op %q", p.OrderNo, x.Op)
		}
	}
	return p, nil
}

// ReadPendingFile reads a pending.jsonl.
func ReadPendingFile(r io.Reader) ([]Pending, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 16<<20)
	var out []Pending
	for line := 1; sc.Scan(); line++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		p, err := ParsePending(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, p)
	}
	return out, sc.Err()
}
