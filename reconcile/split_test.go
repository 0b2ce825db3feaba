package reconcile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCSVParts reads a file in ranges: together they return every record
// once, and an error in a later range names the file's own line number.
func TestCSVParts(t *testing.T) {
	defer func(v int64) { splitMinSize = v }(splitMinSize)
	splitMinSize = 0
	var b strings.Builder
	b.WriteString(strings.Join(PaymentColumns, ",") + "\n")
	const rows = 5000
	for i := range rows {
		fmt.Fprintf(&b, "p%d,o%d,CAPTURED,%d,2026-03-10T10:00:00Z\n", i, i, i)
	}
	p := filepath.Join(t.TempDir(), "payments.csv")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	parts, err := CSVPayments{Path: p}.parts(3)
	if err != nil || len(parts) != 3 {
		t.Fatalf("parts = %d, %v; want 3", len(parts), err)
	}
	seen := map[string]int{}
	for _, part := range parts {
		err := part.ReadPayments(context.Background(), Window{}, func(x *Payment) error {
			seen[strings.Clone(x.PaymentID)]++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != rows {
		t.Errorf("%d distinct payments read; want %d", len(seen), rows)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("payment %s read %d times", id, n)
		}
	}

	// Line 4001 (payment 3999) goes bad: it lies in the last range.
	bad := strings.Replace(b.String(), "p3999,o3999,CAPTURED,3999", "p3999,o3999,CAPTURED,x", 1)
	if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	parts, _ = CSVPayments{Path: p}.parts(3)
	var got error
	for _, part := range parts {
		if err := part.ReadPayments(context.Background(), Window{}, func(*Payment) error { return nil }); err != nil {
			got = err
		}
	}
	if got == nil || !strings.Contains(got.Error(), "payments.csv:4001:") {
		t.Errorf("error = %v; want it at payments.csv:4001", got)
	}

	// A quote anywhere keeps the file whole.
	if err := os.WriteFile(p, []byte(b.String()+"\"p-q\",o,CAPTURED,1,2026-03-10T10:00:00Z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if parts, err := (CSVPayments{Path: p}).parts(3); err != nil || len(parts) != 1 {
		t.Errorf("parts of a quoted file = %d, %v; want 1", len(parts), err)
	}
}
