// Package janitor deletes old rows from DTM barrier tables. DTM ships no
// cleanup for them (dtm#389: "have a DBA delete old rows"), so every
// participant's barrier table grows by a few rows per global transaction
// forever.
//
// A row may go once nothing can call its branch again: when the
// coordinator reports the row's transaction finished (succeed or failed)
// and the row is older than a retention, which covers a duplicate request
// still on its way, or when the row is older than a max age and the
// coordinator reports the transaction finished or does not know it. Rows
// of unfinished transactions stay, however old: they are what makes a late
// duplicate, a Cancel without its Try or a Try after its Cancel change
// nothing. A Cancel whose retries back off past the max age would
// otherwise find its Try's row gone, be taken for a null compensation,
// answer OK and leave the coupon LOCKED. Stats.KeptPastMaxAge counts such
// rows: each is a transaction the coordinator has retried for longer than
// the max age, which wants a look.
//
// The janitor has no leader election of its own: run RunOnce under
// whatever lease the service already has (one runner at a time is a matter
// of load, not of safety: deletions of finished rows commute).
package janitor

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultRetention = 7 * 24 * time.Hour
	DefaultMaxAge    = 30 * 24 * time.Hour
	DefaultBatch     = 500
	DefaultTable     = "barrier"
)

// Transaction statuses as DTM reports them. Unknown is what the lookup
// answers for a gid the coordinator does not know.
const (
	StatusSucceed = "succeed"
	StatusFailed  = "failed"
	Unknown       = ""
)

// StatusFunc returns the DTM status of the global transaction gid
// ("prepared", "submitted", "aborting", "succeed", "failed"), or Unknown
// when the coordinator has no such transaction. An error means the status
// could not be learnt; the janitor keeps the rows and stops the run.
type StatusFunc func(ctx context.Context, gid string) (string, error)

// Config says what the janitor deletes. Zero values take the defaults.
type Config struct {
	// Retention: rows of finished transactions older than this go.
	// Default 7 days.
	Retention time.Duration
	// MaxAge: rows older than this go unless the coordinator reports
	// their transaction unfinished (prepared, submitted, aborting): a gid
	// it does not know goes too, whatever UnknownFinished says. Default 30
	// days; never below Retention.
	MaxAge time.Duration
	// Batch is how many rows one statement reads or deletes. Default 500.
	Batch int
	// Status looks a transaction's status up. When nil, Coordinator must
	// be set and the janitor asks it over HTTP.
	Status StatusFunc
	// Coordinator is the DTM server's HTTP address, "127.0.0.1:36789",
	// used when Status is nil.
	Coordinator string
	// HTTPClient for Coordinator; default a client with a 5s timeout.
	HTTPClient *http.Client
	// UnknownFinished treats a gid the coordinator does not know as
	// finished. Leave it off unless the janitor surely asks the
	// coordinator (and store) that ran the transactions and that store
	// forgets finished transactions (DTM's redis store does after
	// FinishedDataExpire, 1 day by default): then a row past Retention
	// whose gid is unknown is a finished one. Off, such rows stay until
	// MaxAge — the safe side if the janitor were pointed at the wrong
	// coordinator, where every gid is unknown.
	UnknownFinished bool
	// Table is the barrier table's name in every database. Default
	// "barrier".
	Table string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Stats is what one run did, summed over the databases.
type Stats struct {
	// Deleted is every row deleted: DeletedFinished + DeletedExpired.
	Deleted int64
	// DeletedFinished are rows past Retention of finished transactions.
	DeletedFinished int64
	// DeletedExpired are rows past MaxAge of transactions the
	// coordinator reports finished or does not know.
	DeletedExpired int64
	// Kept are rows past Retention left in place: their transaction is
	// unfinished, or unknown to the coordinator (see UnknownFinished).
	Kept int64
	// KeptPastMaxAge are the rows of Kept past MaxAge: their transaction
	// is still unfinished. Anything here is a transaction retried for
	// longer than MaxAge.
	KeptPastMaxAge int64
	// KeptUnknown are the rows of Kept whose gid the coordinator does not
	// know. Most rows here means the janitor asks the wrong coordinator,
	// or one whose store forgets finished transactions.
	KeptUnknown int64
	// Lookups is how many transaction statuses were asked for.
	Lookups int
	// OldestAge is the age of the oldest row left after the run, over all
	// databases; 0 when every table is empty.
	OldestAge time.Duration
}

func (s *Stats) add(o Stats) {
	s.Deleted += o.Deleted
	s.DeletedFinished += o.DeletedFinished
	s.DeletedExpired += o.DeletedExpired
	s.Kept += o.Kept
	s.KeptUnknown += o.KeptUnknown
	s.KeptPastMaxAge += o.KeptPastMaxAge
	s.Lookups += o.Lookups
	s.OldestAge = max(s.OldestAge, o.OldestAge)
}

// Janitor cleans the barrier tables of a set of databases.
type Janitor struct {
	cfg Config
	dbs []*sql.DB
}

var tableName = regexp.MustCompile(`^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?$`)

// New returns a janitor over dbs, each holding a DTM barrier table (id,
// gid, create_time, …) with KEY idx_create_time (create_time), as the coupon
// shards' and the sample shop's have.
func New(cfg Config, dbs ...*sql.DB) (*Janitor, error) {
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Retention < 0:
		return nil, fmt.Errorf("janitor: retention %s is negative", cfg.Retention)
	case cfg.MaxAge < cfg.Retention:
		return nil, fmt.Errorf("janitor: max age %s is below retention %s", cfg.MaxAge, cfg.Retention)
	case cfg.Batch < 1 || cfg.Batch > 10000:
		return nil, fmt.Errorf("janitor: batch %d is not within 1..10000", cfg.Batch)
	case !tableName.MatchString(cfg.Table):
		return nil, fmt.Errorf("janitor: table %q is not a plain table name", cfg.Table)
	case len(dbs) == 0:
		return nil, errors.New("janitor: no databases")
	}
	if cfg.Status == nil {
		if cfg.Coordinator == "" {
			return nil, errors.New("janitor: neither a status lookup nor a coordinator address")
		}
		cfg.Status = CoordinatorStatus(cfg.Coordinator, cfg.HTTPClient)
	}
	for i, db := range dbs {
		if db == nil {
			return nil, fmt.Errorf("janitor: database %d is nil", i)
		}
	}
	return &Janitor{cfg: cfg, dbs: dbs}, nil
}

// RunOnce cleans every database once and returns what it did. It stops at
// the first error (a database or a status lookup failing), returning what
// it did until then with the error; rows it could not decide on stay.
func (j *Janitor) RunOnce(ctx context.Context) (Stats, error) {
	var total Stats
	// One status cache per run: a transaction's rows sit close together in
	// create_time, and often in several of the databases.
	statuses := newStatusCache(j.cfg.Status, 10000)
	for i, db := range j.dbs {
		st, err := j.clean(ctx, db, statuses)
		total.add(st)
		if err != nil {
			return total, fmt.Errorf("clean barrier table of database %d: %w", i, err)
		}
	}
	total.Lookups = statuses.lookups
	return total, nil
}

// dbTime is the wall-clock layout of DATETIME columns. Barrier rows get
// create_time from the database's own clock in the session time zone
// (DEFAULT NOW()), so cutoffs are written and read in that zone, as text,
// whatever time zone the driver's DSN parses DATETIME in.
const dbTime = "2006-01-02 15:04:05"

func (j *Janitor) clean(ctx context.Context, db *sql.DB, statuses *statusCache) (Stats, error) {
	var st Stats
	var offset int64 // session time zone minus UTC, in seconds
	if err := db.QueryRowContext(ctx, `SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW())`).Scan(&offset); err != nil {
		return st, fmt.Errorf("read session time zone: %w", err)
	}
	now := j.cfg.Now().UTC().Add(time.Duration(offset) * time.Second)
	local := func(t time.Time) string { return t.Format(dbTime) }
	if err := j.walk(ctx, db, local(now.Add(-j.cfg.Retention)), local(now.Add(-j.cfg.MaxAge)), statuses, &st); err != nil {
		return st, err
	}
	var age sql.NullInt64
	q := `SELECT TIMESTAMPDIFF(SECOND, MIN(create_time), ?) FROM ` + j.cfg.Table
	if err := db.QueryRowContext(ctx, q, local(now)).Scan(&age); err != nil {
		return st, fmt.Errorf("oldest row: %w", err)
	}
	if age.Valid && age.Int64 > 0 {
		st.OldestAge = time.Duration(age.Int64) * time.Second
	}
	return st, nil
}

type row struct {
	id      int64
	gid     string
	created string // create_time with microseconds, in the session's zone
	expired bool   // older than MaxAge
}

// walk reads the rows created before retained a page at a time through the
// create_time index, in (create_time, id) order so that kept rows are
// passed over, and deletes by primary key those whose transaction has
// finished and those older than expired whose transaction is not known to
// be unfinished. Each statement touches at most
// Batch rows, so it holds its locks briefly, and deleting by id keeps it
// deterministic for statement-based replication.
func (j *Janitor) walk(ctx context.Context, db *sql.DB, retained, expired string, statuses *statusCache, st *Stats) error {
	after := row{created: "1000-01-01 00:00:00.000000"}
	for {
		page, err := j.page(ctx, db, retained, expired, after)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		after = page[len(page)-1]
		var old, done []any
		for _, r := range page {
			status, err := statuses.get(ctx, r.gid)
			if err != nil {
				return fmt.Errorf("status of %s: %w", r.gid, err)
			}
			finished := status == StatusSucceed || status == StatusFailed
			switch {
			case r.expired && (finished || status == Unknown):
				old = append(old, r.id)
			case finished || status == Unknown && j.cfg.UnknownFinished:
				done = append(done, r.id)
			default:
				st.Kept++
				if status == Unknown {
					st.KeptUnknown++
				}
				if r.expired {
					st.KeptPastMaxAge++
				}
			}
		}
		n, err := j.delete(ctx, db, old)
		st.DeletedExpired += n
		st.Deleted += n
		if err != nil {
			return fmt.Errorf("delete rows older than %s: %w", expired, err)
		}
		n, err = j.delete(ctx, db, done)
		st.DeletedFinished += n
		st.Deleted += n
		if err != nil {
			return fmt.Errorf("delete rows of finished transactions: %w", err)
		}
		if len(page) < j.cfg.Batch {
			return nil
		}
	}
}

func (j *Janitor) page(ctx context.Context, db *sql.DB, retained, expired string, after row) ([]row, error) {
	rows, err := db.QueryContext(ctx, pageQuery(j.cfg.Table), expired, retained, after.created, after.created, after.id, j.cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("read rows older than %s: %w", retained, err)
	}
	defer rows.Close()
	var page []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.gid, &r.created, &r.expired); err != nil {
			return nil, fmt.Errorf("read barrier row: %w", err)
		}
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rows older than %s: %w", retained, err)
	}
	return page, nil
}

// pageQuery reads a page of rows older than its second argument after the
// row (create_time, id) given next, in index order, with whether each is
// older than its first argument. The index is forced: when most of a large
// table is past the cutoff, the optimizer may otherwise pick a full scan
// and a sort, which would hold locks and I/O far beyond one small batch.
func pageQuery(table string) string {
	return `SELECT id, gid, DATE_FORMAT(create_time, '%Y-%m-%d %H:%i:%s.%f'), create_time < ? FROM ` + table + ` FORCE INDEX (idx_create_time)
		WHERE create_time < ? AND (create_time > ? OR (create_time = ? AND id > ?))
		ORDER BY create_time, id LIMIT ?`
}

func (j *Janitor) delete(ctx context.Context, db *sql.DB, ids []any) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	q := `DELETE FROM ` + j.cfg.Table + ` WHERE id IN (?` + strings.Repeat(",?", len(ids)-1) + `)`
	res, err := db.ExecContext(ctx, q, ids...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// statusCache remembers the statuses learnt in one run. Only finished
// statuses could be kept longer, but a run is short, and asking again for
// an unfinished transaction within it would change nothing.
type statusCache struct {
	lookup  StatusFunc
	limit   int
	known   map[string]string
	lookups int
}

func newStatusCache(lookup StatusFunc, limit int) *statusCache {
	return &statusCache{lookup: lookup, limit: limit, known: map[string]string{}}
}

func (c *statusCache) get(ctx context.Context, gid string) (string, error) {
	if s, ok := c.known[gid]; ok {
		return s, nil
	}
	c.lookups++
	s, err := c.lookup(ctx, gid)
	if err != nil {
		return "", err
	}
	if len(c.known) >= c.limit {
		clear(c.known)
	}
	c.known[gid] = s
	return s, nil
}
