package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Job is one complete run: carry in the previous run's pending, reconcile,
// write the output directory atomically, repair, and record the run.
type Job struct {
	Options
	Sources Sources
	// SourceKey names the books (see SourceKey) for the previous pending.
	SourceKey string
	// Out is the output directory.
	Out string
	// State is the state database; nil runs without one (no carried
	// pending unless PendingFile, no record, no --apply).
	State *sql.DB
	// PendingFile, when set, is read instead of the previous run's pending.
	PendingFile string
	// Repair, when set, plans (or applies) repairs of the findings, writing
	// one line per item to Report.
	Repair *Repairer
	Report io.Writer
	Host   string
	Now    func() time.Time
}

// JobResult is what a job did.
type JobResult struct {
	*Result
	Run     Run
	Repairs RepairSummary
	// RepairErr is set when repairs failed (the outputs are written).
	RepairErr error
}

// Run runs the job. An error means nothing was written to Out.
func (j *Job) Run(ctx context.Context) (*JobResult, error) {
	now := j.Now
	if now == nil {
		now = time.Now
	}
	if j.Report == nil {
		j.Report = io.Discard
	}
	if j.Out == "" {
		return nil, errors.New("no output directory")
	}
	date := j.Date.Format(time.DateOnly)
	out := &JobResult{}
	var err error
	switch {
	case j.PendingFile != "":
		f, ferr := os.Open(j.PendingFile)
		if ferr != nil {
			return nil, fmt.Errorf("previous pending: %w", ferr)
		}
		j.Carried, err = ReadPendingFile(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("previous pending %s: %w", j.PendingFile, err)
		}
	case j.State != nil:
		if j.Carried, _, err = PreviousPending(ctx, j.State, date, j.SourceKey); err != nil {
			return nil, err
		}
	}
	if j.State != nil {
		if j.Resolved, err = Resolutions(ctx, j.State, date); err != nil {
			return nil, err
		}
	}
	dir, err := CreateOutput(j.Out)
	if err != nil {
		return nil, err
	}
	out.Run = Run{Date: date, AsOf: j.AsOf, SourceKey: j.SourceKey, ReportPath: filepath.Join(dir.Path(), FileReport), Host: j.Host, StartedAt: now()}
	if out.Run.AsOf.IsZero() {
		out.Run.AsOf = j.Date.AddDate(0, 0, 1)
	}
	if j.State != nil {
		if err := StartRun(ctx, j.State, &out.Run); err != nil {
			dir.Abort()
			return nil, err
		}
	}
	fail := func(err error) (*JobResult, error) {
		dir.Abort()
		if j.State != nil {
			// Recorded on a fresh context: the run's may be cancelled.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rerr := FinishRun(rctx, j.State, &out.Run, nil, err, now()); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return nil, err
	}
	disc, err := dir.Create(FileDiscrepancies)
	if err != nil {
		return fail(err)
	}
	pend, err := dir.Create(FilePending)
	if err != nil {
		return fail(err)
	}
	res, err := Reconcile(ctx, j.Options, j.Sources, Outputs{Discrepancies: disc, Pending: pend})
	if err != nil {
		return fail(err)
	}
	out.Result = res
	if err := dir.Flush(); err != nil {
		return fail(err)
	}
	if err := dir.WriteReports(res); err != nil {
		return fail(err)
	}
	if j.Repair != nil {
		items, err := dir.Create(FileRepairs)
		if err != nil {
			return fail(err)
		}
		f, err := dir.Open(FileDiscrepancies)
		if err != nil {
			return fail(err)
		}
		out.Repairs, out.RepairErr = j.Repair.Repair(ctx, date, out.Run.ID, f, items, j.Report)
		f.Close()
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
	}
	if err := dir.Commit(); err != nil {
		return fail(err)
	}
	if j.State != nil {
		f, err := os.Open(filepath.Join(dir.Path(), FilePending))
		if err != nil {
			return nil, err
		}
		err = SavePending(ctx, j.State, out.Run.ID, f)
		f.Close()
		if err == nil {
			err = FinishRun(ctx, j.State, &out.Run, res, nil, now())
		}
		if err != nil {
			// The outputs are there, but the next day would not see this
			// run's pending: that is an error.
			_ = FinishRun(context.WithoutCancel(ctx), j.State, &out.Run, res, err, now())
			return out, err
		}
	}
	return out, nil
}
