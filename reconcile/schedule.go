package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/go-sql-driver/mysql"
)

// Scheduler runs the reconciliation of the previous day on a cron
// schedule, on every replica, so that exactly one replica runs each day:
// a MySQL named lock (GET_LOCK, held for the run by gocron's distributed
// locker) keeps replicas from running at once, and a durable claim of the
// day in reconcile_claim keeps a finished day from running again and lets
// another replica take over a day whose runner died (its lease expired).
type Scheduler struct {
	// DB is the state database (locks and claims).
	DB *sql.DB
	// Cron is a 5-field cron expression (6 with seconds) in Zone.
	Cron string
	Zone *time.Location
	// SourceKey names the books: claims are per day and books.
	SourceKey string
	// Owner names this replica in claims, e.g. host:pid.
	Owner string
	// Lease bounds how long a claim outlives a runner that stopped
	// renewing it (it is renewed every Lease/3 while running).
	Lease time.Duration
	// Run reconciles one day (midnight in Zone) and returns its run ID.
	Run func(ctx context.Context, day time.Time) (int64, error)
	Log *slog.Logger
	Now func() time.Time
}

// Claim statuses.
const (
	ClaimRunning = "running"
	ClaimDone    = "done"
	ClaimFailed  = "failed"
)

// ErrLocked is returned by the locker when another replica holds the lock.
var ErrLocked = errors.New("reconcile: another replica holds the lock")

// Start schedules the job and blocks until ctx is done.
func (s *Scheduler) Start(ctx context.Context) error {
	s, err := s.withDefaults()
	if err != nil {
		return err
	}
	fields := len(strings.Fields(s.Cron))
	if fields != 5 && fields != 6 {
		return fmt.Errorf("schedule %q: want a cron expression of 5 fields (6 with seconds)", s.Cron)
	}
	sched, err := gocron.NewScheduler(
		gocron.WithLocation(s.Zone),
		gocron.WithDistributedLocker(&mysqlLocker{db: s.DB}),
	)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	_, err = sched.NewJob(gocron.CronJob(s.Cron, fields == 6),
		gocron.NewTask(func(ctx context.Context) {
			if _, err := s.RunDue(ctx); err != nil {
				s.Log.ErrorContext(ctx, "scheduled reconciliation", "err", err)
			}
		}),
		gocron.WithName("reconcile:"+s.SourceKey),
		gocron.WithSingletonMode(gocron.LimitModeReschedule),
		gocron.WithContext(ctx),
		// A replica that starts after the day's tick (a deploy, a crash)
		// catches up: the claim keeps a finished day from running again.
		gocron.WithStartAt(gocron.WithStartImmediately()),
	)
	if err != nil {
		_ = sched.Shutdown()
		return fmt.Errorf("schedule %q: %w", s.Cron, err)
	}
	sched.Start()
	s.Log.InfoContext(ctx, "reconcile scheduled", "cron", s.Cron, "zone", s.Zone.String(), "owner", s.Owner)
	<-ctx.Done()
	return sched.Shutdown()
}

// withDefaults returns a copy with the defaults filled in (the original
// may be shared by concurrent calls).
func (s *Scheduler) withDefaults() (*Scheduler, error) {
	if s.DB == nil || s.Run == nil {
		return nil, errors.New("scheduler needs the state database and a run function")
	}
	c := *s
	s = &c
	if s.Zone == nil {
		s.Zone = time.UTC
	}
	if s.Lease <= 0 {
		s.Lease = 10 * time.Minute
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// RunDue runs the day before now (in Zone) unless a replica finished it or
// holds a live claim on it. It reports whether this call ran it.
func (s *Scheduler) RunDue(ctx context.Context) (bool, error) {
	s, err := s.withDefaults()
	if err != nil {
		return false, err
	}
	y, m, d := s.Now().In(s.Zone).Date()
	day := time.Date(y, m, d, 0, 0, 0, 0, s.Zone).AddDate(0, 0, -1)
	date := day.Format(time.DateOnly)
	ok, why, err := s.claim(ctx, date)
	if err != nil || !ok {
		if err == nil {
			s.Log.InfoContext(ctx, "reconcile skipped", "date", date, "why", why)
		}
		return false, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.renew(rctx, date, cancel)
	}()
	s.Log.InfoContext(ctx, "reconcile started", "date", date, "owner", s.Owner)
	runID, runErr := s.Run(rctx, day)
	cancel()
	wg.Wait()
	status := ClaimDone
	if runErr != nil {
		status = ClaimFailed
	}
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer fcancel()
	_, err = s.DB.ExecContext(fctx, `UPDATE reconcile_claim SET status = ?, run_id = ?, finished_at = ? WHERE run_date = ? AND source_key = ? AND owner = ?`,
		status, runID, s.Now().UTC(), date, s.SourceKey, s.Owner)
	if err != nil {
		err = fmt.Errorf("finish claim of %s: %w", date, err)
	}
	if runErr != nil {
		return true, errors.Join(fmt.Errorf("reconcile %s: %w", date, runErr), err)
	}
	s.Log.InfoContext(ctx, "reconcile finished", "date", date, "run_id", runID)
	return true, err
}

// claim takes the day for this replica: it is free, failed, or running
// under an expired lease.
func (s *Scheduler) claim(ctx context.Context, date string) (bool, string, error) {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return false, "", fmt.Errorf("claim %s: %w", date, err)
	}
	defer func() { _ = tx.Rollback() }()
	now := s.Now().UTC()
	var owner, status string
	var lease time.Time
	err = tx.QueryRowContext(ctx, `SELECT owner, status, lease_until FROM reconcile_claim WHERE run_date = ? AND source_key = ? FOR UPDATE`,
		date, s.SourceKey).Scan(&owner, &status, &lease)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.ExecContext(ctx, `INSERT INTO reconcile_claim (run_date, source_key, owner, status, lease_until, claimed_at) VALUES (?,?,?,?,?,?)`,
			date, s.SourceKey, s.Owner, ClaimRunning, now.Add(s.Lease), now)
	case err != nil:
	case status == ClaimDone:
		return false, "done by " + owner, nil
	case status == ClaimRunning && lease.After(now):
		return false, "running on " + owner, nil
	default: // failed, or its runner stopped renewing
		_, err = tx.ExecContext(ctx, `UPDATE reconcile_claim SET owner = ?, status = ?, lease_until = ?, claimed_at = ?, finished_at = NULL
			WHERE run_date = ? AND source_key = ?`, s.Owner, ClaimRunning, now.Add(s.Lease), now, date, s.SourceKey)
	}
	if err == nil {
		err = tx.Commit()
	}
	if raced(err) {
		return false, "claimed by another replica at the same moment", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("claim %s: %w", date, err)
	}
	return true, "", nil
}

// raced tells a claim that lost to a concurrent one: a duplicate key, or
// the deadlock two inserts into the same gap make.
func raced(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1062 || me.Number == 1213)
}

// renew extends the claim while the run goes on; if the claim was taken
// over (this replica was presumed dead) the run is cancelled.
func (s *Scheduler) renew(ctx context.Context, date string, cancel func()) {
	t := time.NewTicker(s.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.DB.ExecContext(ctx, `UPDATE reconcile_claim SET lease_until = ? WHERE run_date = ? AND source_key = ? AND owner = ? AND status = ?`,
			s.Now().UTC().Add(s.Lease), date, s.SourceKey, s.Owner, ClaimRunning)
		if err != nil {
			s.Log.WarnContext(ctx, "renew reconcile claim", "date", date, "err", err)
			continue
		}
		if n, _ := res.RowsAffected(); n == 0 {
			s.Log.ErrorContext(ctx, "reconcile claim lost; stopping the run", "date", date)
			cancel()
			return
		}
	}
}

// mysqlLocker is gocron's distributed locker over MySQL named locks: the
// lock lives with one connection, so a replica that dies releases it.
type mysqlLocker struct{ db *sql.DB }

func lockName(key string) string {
	// MySQL caps lock names at 64 characters.
	return truncate("coupon-reconcile:"+key, 64)
}

func (l *mysqlLocker) Lock(ctx context.Context, key string) (gocron.Lock, error) {
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile lock: %w", err)
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, lockName(key)).Scan(&got); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("reconcile lock: %w", err)
	}
	if got.Int64 != 1 {
		_ = conn.Close()
		return nil, ErrLocked
	}
	return &mysqlLock{conn: conn, name: lockName(key)}, nil
}

type mysqlLock struct {
	conn *sql.Conn
	name string
}

func (l *mysqlLock) Unlock(ctx context.Context) error {
	_, err := l.conn.ExecContext(ctx, `DO RELEASE_LOCK(?)`, l.name)
	// Closing the connection releases the lock in any case.
	return errors.Join(err, l.conn.Close())
}
