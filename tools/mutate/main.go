// Command mutate measures the tests of the money and authentication paths:
// it applies one-line mutations (mutations.go), each a plausible bug, to a
// copy of one file handed to the compiler with -overlay (the tree is never
// written), runs the tests that should catch it and reports which mutants
// the tests killed. A survivor is a bug no test stands in the way of,
// unless its entry explains why the mutant is harmless.
//
//	go run ./tools/mutate            every mutation (make mutate)
//	go run ./tools/mutate -only ID   one mutation
//	go run ./tools/mutate -list      the mutations, without running them
//	go run ./tools/mutate -only ID -overlay DIR
//	                                 write the mutant and its overlay into
//	                                 DIR and print the overlay's path
//
// -overlay is for tests that prove a checker can fail: they build the
// broken binary with `go build -overlay`, so no test hook has to live in
// the production code.
//
// The exit status is 1 when a mutant survives unexplained or a mutation no
// longer matches its file (the list went stale), 0 otherwise.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

type result int

const (
	killed result = iota
	survived
	explained // survived, with a reason why the mutant is harmless
	invalid   // the mutant does not compile: the entry needs fixing
	stale     // Find no longer occurs exactly once in File
)

func (r result) String() string {
	return [...]string{"killed", "SURVIVED", "explained", "INVALID", "STALE"}[r]
}

func main() {
	only := flag.String("only", "", "run only the mutation with this ID")
	list := flag.Bool("list", false, "list the mutations and exit")
	timeout := flag.Duration("timeout", 10*time.Minute, "limit for one mutant's tests")
	overlay := flag.String("overlay", "", "with -only: write the mutant and its overlay file into this directory, print the overlay's path and run nothing")
	flag.Parse()
	if *overlay != "" {
		if err := writeOverlay(*only, *overlay); err != nil {
			fmt.Fprintln(os.Stderr, "mutate:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*only, *list, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		os.Exit(1)
	}
}

func run(only string, list bool, timeout time.Duration) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	var todo []mutation
	for _, m := range mutations {
		if only == "" || m.ID == only {
			todo = append(todo, m)
		}
	}
	if len(todo) == 0 {
		return fmt.Errorf("no mutation %q", only)
	}
	if list {
		for _, m := range todo {
			fmt.Printf("%-32s %s\n", m.ID, m.Bug)
			for _, e := range m.edits() {
				fmt.Printf("  %s: %q -> %q\n", m.File, e.Find, e.Replace)
			}
			fmt.Printf("  caught by %s -run '%s'\n", m.Pkg, m.Run)
		}
		return nil
	}
	tmp, err := os.MkdirTemp("", "mutate")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// Each test set must pass unmutated, or a failure proves nothing.
	baseline := map[string]bool{}
	for _, m := range todo {
		key := m.Pkg + " " + m.Run
		if baseline[key] {
			continue
		}
		fmt.Printf("baseline %s -run '%s' ... ", m.Pkg, m.Run)
		start := time.Now()
		out, err := goTest(root, "", m, timeout)
		if err != nil {
			fmt.Printf("FAILED\n%s\n", tail(out, 40))
			return fmt.Errorf("tests fail without a mutation: %s -run '%s'", m.Pkg, m.Run)
		}
		fmt.Printf("ok (%s)\n", time.Since(start).Round(time.Second))
		baseline[key] = true
	}

	counts := map[result]int{}
	var bad []string
	for i, m := range todo {
		start := time.Now()
		r, detail := mutant(root, tmp, i, m, timeout)
		counts[r]++
		fmt.Printf("%-9s %-32s %6s  %s\n", r, m.ID, time.Since(start).Round(time.Second), m.Bug)
		if detail != "" {
			fmt.Printf("          %s\n", detail)
		}
		if r == survived || r == invalid || r == stale {
			bad = append(bad, m.ID)
		}
	}
	total := counts[killed] + counts[survived] + counts[explained]
	fmt.Printf("\nmutation score: %d of %d killed, %d survived, %d explained, %d invalid, %d stale\n",
		counts[killed], total, counts[survived], counts[explained], counts[invalid], counts[stale])
	if len(bad) > 0 {
		return fmt.Errorf("unexplained survivors or broken entries: %s", strings.Join(bad, ", "))
	}
	return nil
}

// writeOverlay writes the mutant of the mutation id and its overlay file
// into dir and prints the overlay's path.
func writeOverlay(id, dir string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	for _, m := range mutations {
		if m.ID != id {
			continue
		}
		ov, err := writeMutant(root, dir, "m_", m)
		if err != nil {
			return fmt.Errorf("mutation %s: %w", id, err)
		}
		fmt.Println(ov)
		return nil
	}
	return fmt.Errorf("no mutation %q", id)
}

// errStale: an edit of a mutation no longer finds its text exactly once.
var errStale = errors.New("stale mutation")

// writeMutant applies m to a copy of its file in dir, named with prefix,
// and writes beside it the overlay file that hands the copy to the
// compiler in place of the original; it returns the overlay's path.
func writeMutant(root, dir, prefix string, m mutation) (string, error) {
	path := filepath.Join(root, m.File)
	src, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errStale, err)
	}
	mutated := src
	for _, e := range m.edits() {
		if n := bytes.Count(mutated, []byte(e.Find)); n != 1 {
			return "", fmt.Errorf("%w: %q occurs %d times in %s, want once", errStale, e.Find, n, m.File)
		}
		mutated = bytes.Replace(mutated, []byte(e.Find), []byte(e.Replace), 1)
	}
	file := filepath.Join(dir, prefix+filepath.Base(m.File))
	if err := os.WriteFile(file, mutated, 0o644); err != nil {
		return "", err
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {path: file}})
	if err != nil {
		return "", err
	}
	ov := filepath.Join(dir, strings.TrimSuffix(prefix, "_")+".json")
	if err := os.WriteFile(ov, overlay, 0o644); err != nil {
		return "", err
	}
	return ov, nil
}

// mutant applies m to a copy of its file and runs its tests with the copy
// overlaid.
func mutant(root, tmp string, i int, m mutation, timeout time.Duration) (result, string) {
	ov, err := writeMutant(root, tmp, fmt.Sprintf("m%d_", i), m)
	switch {
	case errors.Is(err, errStale):
		return stale, strings.TrimPrefix(err.Error(), errStale.Error()+": ")
	case err != nil:
		return invalid, err.Error()
	}
	out, err := goTest(root, ov, m, timeout)
	switch {
	case err == nil && m.Explain != "":
		return explained, m.Explain
	case err == nil:
		return survived, "no test failed"
	case bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")):
		return invalid, "mutant does not build:\n" + tail(out, 10)
	}
	return killed, firstFailure(out)
}

func goTest(root, overlay string, m mutation, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"test", "-count=1", "-run", m.Run}, strings.Fields(m.Pkg)...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "LOG_LEVEL=WARN")
	if overlay != "" {
		// Through GOFLAGS, not an argument: tests that build a binary of
		// their own (a real coordinator, chaos's stack) build the mutant too.
		cmd.Env = append(cmd.Env, "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -overlay="+overlay))
	}
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return out, fmt.Errorf("timed out after %s", timeout)
	}
	return out, err
}

func firstFailure(out []byte) string {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "--- FAIL") {
			return "caught by " + strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "--- FAIL:"))
		}
	}
	return ""
}

func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run inside the module")
	}
	return filepath.Dir(mod), nil
}
