package jobs

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule says when a Job's rounds run.
type Schedule interface {
	// Next returns the first tick after t.
	Next(t time.Time) time.Time
}

// Every ticks every interval from the start of Run, dropping ticks that
// come while a round runs (a time.Ticker). Zero or less: never.
type Every time.Duration

// Next returns t plus the interval.
func (e Every) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

// Cron ticks on a cron expression in a zone.
type Cron struct {
	expr string
	zone *time.Location
	s    cron.Schedule
}

// ParseCron parses a cron expression of 5 fields, or 6 with seconds first,
// read in zone (nil: UTC).
func ParseCron(expr string, zone *time.Location) (*Cron, error) {
	if zone == nil {
		zone = time.UTC
	}
	var s cron.Schedule
	var err error
	switch len(strings.Fields(expr)) {
	case 5:
		s, err = cron.ParseStandard("CRON_TZ=" + zone.String() + " " + expr)
	case 6:
		p := cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
		s, err = p.Parse("CRON_TZ=" + zone.String() + " " + expr)
	default:
		return nil, fmt.Errorf("schedule %q: want a cron expression of 5 fields (6 with seconds)", expr)
	}
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", expr, err)
	}
	if s.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("schedule %q: never runs", expr)
	}
	return &Cron{expr: expr, zone: zone, s: s}, nil
}

// Next returns the first tick after t, in the schedule's zone.
func (c *Cron) Next(t time.Time) time.Time { return c.s.Next(t) }

// String returns the expression and zone.
func (c *Cron) String() string { return c.expr + " in " + c.zone.String() }

// nextAfter returns the tick to wait for after now, when the last one
// waited for was prev (zero: none). A tick with the same wall-clock time
// as prev can only be the second of an hour repeated at a fall-back to
// standard time; it is skipped, so that a daily job does not run twice.
func nextAfter(s Schedule, prev, now time.Time) time.Time {
	next := s.Next(now)
	if !prev.IsZero() && !next.IsZero() && sameWallClock(prev, next.In(prev.Location())) {
		next = s.Next(next)
	}
	return next
}

func sameWallClock(a, b time.Time) bool {
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	return ay == by && am == bm && ad == bd && a.Hour() == b.Hour() && a.Minute() == b.Minute() && a.Second() == b.Second()
}

func enabled(s Schedule) bool {
	switch s := s.(type) {
	case nil:
		return false
	case Every:
		return s > 0
	}
	return true
}
