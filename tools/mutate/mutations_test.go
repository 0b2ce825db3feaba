package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMutationsMatchTheCode keeps the list from going stale with the code
// it mutates: every edit finds its text exactly once, in order, and changes
// the file.
func TestMutationsMatchTheCode(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range mutations {
		t.Run(m.ID, func(t *testing.T) {
			if seen[m.ID] {
				t.Fatalf("duplicate mutation ID %s", m.ID)
			}
			seen[m.ID] = true
			if m.Bug == "" || m.Pkg == "" || m.Run == "" {
				t.Fatalf("mutation %s lacks its bug, package or tests", m.ID)
			}
			src, err := os.ReadFile(filepath.Join("..", "..", m.File))
			if err != nil {
				t.Fatal(err)
			}
			mutated := src
			for _, e := range m.edits() {
				if n := bytes.Count(mutated, []byte(e.Find)); n != 1 {
					t.Fatalf("%q occurs %d times in %s, want once", e.Find, n, m.File)
				}
				mutated = bytes.Replace(mutated, []byte(e.Find), []byte(e.Replace), 1)
			}
			if bytes.Equal(mutated, src) {
				t.Fatalf("mutation %s changes nothing", m.ID)
			}
			for _, p := range strings.Fields(m.Pkg) {
				if _, err := os.Stat(filepath.Join("..", "..", strings.TrimSuffix(p, "..."))); err != nil {
					t.Fatalf("package %s: %v", p, err)
				}
			}
		})
	}
}
