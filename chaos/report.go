package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteTable prints one table per scenario: what ran, the faults, and each
// invariant with the first offending ids.
func (rep *Report) WriteTable(w io.Writer) error {
	for _, s := range rep.Scenarios {
		fmt.Fprintf(w, "\n== %s — %s (%s)\n", s.Name, s.About, s.Took)
		fmt.Fprintf(w, "operations %d (claims %d, shop orders %d, own transactions %d); transactions %s\n",
			s.Ops, s.Claims, s.Orders, s.Direct, statusCounts(s.Transactions))
		exercised := "exercised"
		if !s.Exercised {
			exercised = "NOT EXERCISED"
		}
		fmt.Fprintf(w, "committed %d (%.1f a minute, floor %d: %s), aborted %d (%s); %.1f operations a second; %d users\n",
			s.Committed, s.CommitsPerMinute, s.Floor, exercised, s.Aborted, counts(s.Aborts), s.OpsPerSecond, s.Users)
		fmt.Fprintf(w, "refused Tries: %s; refused claims: %s\n", counts(s.RefusedTries), counts(s.RefusedClaims))
		faults := "none"
		if len(s.Faults) > 0 {
			faults = summarizeFaults(s.Faults)
		}
		fmt.Fprintf(w, "faults: %s\n", faults)
		if s.Error != "" {
			fmt.Fprintf(w, "ERROR: %s\n", s.Error)
		}
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "#\tINVARIANT\tRESULT\tFIRST OFFENDING")
		for _, inv := range s.Invariants {
			result := inv.Status
			if inv.Violations > 0 {
				result = fmt.Sprintf("VIOLATED ×%d", inv.Violations)
			}
			first := strings.Join(inv.First, ", ")
			if first == "" {
				first = inv.Note
			}
			if first == "" {
				first = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", inv.ID, inv.Name, result, first)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, inv := range s.Invariants {
			for _, d := range inv.Details {
				fmt.Fprintf(w, "  [%d] %s\n", inv.ID, d)
			}
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	fmt.Fprintf(w, "\n%s\n", rep.Summary())
	return nil
}

// WriteMarkdown prints the summary table (scenario × invariant) that the
// docs/decisions keep from the last smoke run.
func (rep *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| scenario | ops/s | commits | commits/min | aborts | refused Tries | faults | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | first offending |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range rep.Scenarios {
		cells := make([]string, 0, edgeInvariant)
		var first []string
		byID := map[int]Invariant{}
		for _, inv := range s.Invariants {
			byID[inv.ID] = inv
		}
		for id := 1; id <= edgeInvariant; id++ {
			inv, ok := byID[id]
			if !ok { // the edge invariant, outside connection-flood
				cells = append(cells, "")
				continue
			}
			switch inv.Status {
			case held:
				cells = append(cells, "✓")
			case skipped:
				cells = append(cells, "–")
			default:
				cells = append(cells, fmt.Sprintf("✗ %d", inv.Violations))
				if len(inv.First) > 0 {
					first = append(first, fmt.Sprintf("%d: %s", inv.ID, inv.First[0]))
				}
			}
		}
		if s.Error != "" {
			first = append(first, "error: "+s.Error)
		} else if !s.Exercised {
			first = append(first, fmt.Sprintf("not exercised: %d commits, floor %d", s.Committed, s.Floor))
		}
		fmt.Fprintf(w, "| %s | %.1f | %d | %.1f | %s | %s | %d | %s | %s |\n", s.Name, s.OpsPerSecond, s.Committed, s.CommitsPerMinute,
			counts(s.Aborts), counts(s.RefusedTries), len(s.Faults), strings.Join(cells, " | "), strings.Join(first, "; "))
	}
}

// Summary is the run's last line.
func (rep *Report) Summary() string {
	bad, commits := 0, 0
	for _, s := range rep.Scenarios {
		if s.Violations() > 0 || s.Error != "" {
			bad++
		}
		commits += s.Committed
	}
	return fmt.Sprintf("chaos: %d scenarios, %d with violations or errors, %d invariant violations, %d not exercised; %d commits; seed %d, %s",
		len(rep.Scenarios), bad, rep.Violations, rep.NotExercised, commits, rep.Seed, rep.Took)
}

// WriteJSON writes the report to file atomically.
func (rep *Report) WriteJSON(file string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".chaos-report-*")
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("write report: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write report: %w", err)
	}
	return os.Rename(tmp.Name(), file)
}

func statusCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// counts prints a reason → count map, largest first, "none" when empty.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// summarizeFaults lists the faults in order, each kind once: a scenario
// that holds back hundreds of Confirms prints "down@dtm-coupon ×349", not
// 349 entries.
func summarizeFaults(faults []string) string {
	var kinds []string
	n := map[string]int{}
	first := map[string]string{}
	for _, f := range faults {
		kind := f
		if i := strings.LastIndexByte(f, ' '); i > 0 {
			kind = f[:i]
		}
		if n[kind] == 0 {
			kinds = append(kinds, kind)
			first[kind] = f
		}
		n[kind]++
	}
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = first[k]
		if n[k] > 1 {
			out[i] = fmt.Sprintf("%s ×%d", k, n[k])
		}
	}
	return strings.Join(out, "; ")
}
