package jobs

import (
	"testing"
	"time"
	_ "time/tzdata"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	z, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func TestCronNextInZone(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	tests := []struct {
		expr  string
		zone  *time.Location
		after time.Time
		want  time.Time
	}{
		{"30 2 * * *", berlin, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC), time.Date(2026, 3, 11, 1, 30, 0, 0, time.UTC)},
		{"30 2 * * *", time.UTC, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC), time.Date(2026, 3, 11, 2, 30, 0, 0, time.UTC)},
		{"15 30 2 * * *", berlin, time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 7, 1, 0, 30, 15, 0, time.UTC)},
		{"0 0 * * *", nil, time.Date(2026, 3, 10, 23, 59, 59, 0, time.UTC), time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			c, err := ParseCron(tt.expr, tt.zone)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Next(tt.after); !got.Equal(tt.want) {
				t.Errorf("Next(%v) = %v; want %v", tt.after, got.UTC(), tt.want)
			}
		})
	}
	for _, bad := range []string{"* * * *", "* * * * * * *", "61 * * * *", ""} {
		if _, err := ParseCron(bad, nil); err == nil {
			t.Errorf("ParseCron(%q) took it; want an error", bad)
		}
	}
}

// TestCronFallBack: a daily tick in the hour repeated when clocks go back
// runs once that day.
func TestCronFallBack(t *testing.T) {
	ny := mustZone(t, "America/New_York")
	c, err := ParseCron("30 1 * * *", ny)
	if err != nil {
		t.Fatal(err)
	}
	first := time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC) // 01:30 EDT
	got := nextAfter(c, first.In(ny), first.Add(time.Minute))
	if want := time.Date(2026, 11, 2, 1, 30, 0, 0, ny); !got.Equal(want) {
		t.Errorf("tick after 01:30 EDT on the fall-back day = %v; want %v", got, want)
	}
}
