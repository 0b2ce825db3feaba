package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/internal/jobs"
	"github.com/opencoupon/coupon/internal/jobs/mysqllock"
)

// Scheduler runs the reconciliation of the previous day on a cron
// schedule, on every replica, so that exactly one replica runs each day:
// a MySQL named lock (GET_LOCK, held for the run by the job runner of
// internal/jobs) keeps replicas from running at once, and a durable claim
// of the day in reconcile_claim keeps a finished day from running again
// and lets another replica take over a day whose runner died (its lease
// expired).
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

// Start runs the job on its schedule until ctx is done. A replica that
// starts after the day's tick (a deploy, a crash) catches up at once: the
// claim keeps a finished day from running again.
func (s *Scheduler) Start(ctx context.Context) error {
	s, err := s.withDefaults()
	if err != nil {
		return err
	}
	cron, err := jobs.ParseCron(s.Cron, s.Zone)
	if err != nil {
		return err
	}
	name := "reconcile:" + s.SourceKey
	j := &jobs.Job{
		Name: name, Schedule: cron, Log: s.Log,
		// The named lock lives with its connection, so it needs no TTL and
		// a run is not cut short; it is given up between runs rather than
		// holding a connection for a day.
		Locker: &mysqllock.Locker{DB: s.DB}, Lease: lockName(name), ReleaseAfterRound: true,
		Round: func(ctx context.Context) error {
			// A failed day is logged as an error here, once: it wants a
			// look, and the next tick retries it (its claim is failed).
			if _, err := s.RunDue(ctx); err != nil {
				s.Log.ErrorContext(ctx, "scheduled reconciliation", "err", err)
			}
			return nil
		},
	}
	s.Log.InfoContext(ctx, "reconcile scheduled", "cron", s.Cron, "zone", s.Zone.String(), "owner", s.Owner)
	j.Run(ctx)
	return nil
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

// lockName is the MySQL named lock (jobs/mysqllock) that keeps replicas
// from running the job named key at once.
func lockName(key string) string {
	// MySQL caps lock names at 64 characters.
	return truncate("coupon-reconcile:"+key, mysqllock.MaxName)
}
