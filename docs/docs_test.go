// Package docs checks the project's Markdown: README.md stays short enough
// for a newcomer, and no relative link in it, in docs/ or in the sample
// shop's README points at a file or heading that is not there.
package docs

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// root is the repository, seen from this package's directory.
const root = ".."

// maxReadmeLines is the README's budget: past it, text belongs in docs/.
const maxReadmeLines = 300

func TestReadmeIsShort(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n >= maxReadmeLines {
		t.Errorf("README.md has %d lines, want fewer than %d: move the detail into docs/", n, maxReadmeLines)
	}
}

func TestRelativeLinksResolve(t *testing.T) {
	files := markdownFiles(t)
	headings := map[string]map[string]bool{} // repo-relative file → anchors
	anchorsOf := func(file string) (map[string]bool, error) {
		if h, ok := headings[file]; ok {
			return h, nil
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
		if err != nil {
			return nil, err
		}
		h := anchors(string(b))
		headings[file] = h
		return h, nil
	}
	checked := 0
	for _, file := range files {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links(string(b)) {
			if external(l.target) {
				continue
			}
			checked++
			if err := resolve(file, l.target, anchorsOf); err != nil {
				t.Errorf("%s:%d: link %q: %v", file, l.line, l.target, err)
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no relative links at all: is the link pattern broken?")
	}
}

// markdownFiles lists README.md, every .md under docs/ and the shop's
// README, repo-relative with forward slashes.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md", "examples/shop/README.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// resolve checks that target, written in file, names an existing file or
// directory, and that its #anchor, if any, is a heading of that file.
func resolve(file, target string, anchorsOf func(string) (map[string]bool, error)) error {
	p, anchor, _ := strings.Cut(target, "#")
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	dest := file
	if p != "" {
		if strings.HasPrefix(p, "/") {
			dest = path.Clean(strings.TrimPrefix(p, "/"))
		} else {
			dest = path.Join(path.Dir(file), p)
		}
		if dest == ".." || strings.HasPrefix(dest, "../") {
			return fmt.Errorf("points outside the repository")
		}
	}
	st, err := os.Stat(filepath.Join(root, filepath.FromSlash(dest)))
	if err != nil {
		return fmt.Errorf("no file %s", dest)
	}
	if anchor == "" {
		return nil
	}
	if st.IsDir() || !strings.HasSuffix(dest, ".md") {
		return fmt.Errorf("anchor #%s on %s, which is not a Markdown file", anchor, dest)
	}
	as, err := anchorsOf(dest)
	if err != nil {
		return err
	}
	if !as[strings.ToLower(anchor)] {
		return fmt.Errorf("no heading #%s in %s", anchor, dest)
	}
	return nil
}

func external(target string) bool {
	t := strings.ToLower(target)
	return strings.HasPrefix(t, "http://") || strings.HasPrefix(t, "https://") || strings.HasPrefix(t, "mailto:")
}

type link struct {
	line   int
	target string
}

var (
	// inlineLink matches [text](target) and ![alt](target), with an
	// optional "title".
	inlineLink = regexp.MustCompile(`!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// refLink matches a reference definition: [label]: target
	refLink  = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$`)
	codeSpan = regexp.MustCompile("`+[^`]*`+")
)

// links returns the links of a Markdown text outside code blocks and code
// spans.
func links(text string) []link {
	var out []link
	inFence, fence := false, ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if f, ok := fenceOf(line); ok {
			inFence, fence = toggleFence(inFence, fence, f)
			continue
		}
		if inFence {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			out = append(out, link{n, m[1]})
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			out = append(out, link{n, m[1]})
		}
	}
	return out
}

// toggleFence opens a block on a fence, or closes the open one on a fence
// of the same character at least as long.
func toggleFence(inFence bool, open, f string) (bool, string) {
	if !inFence {
		return true, f
	}
	if f[0] == open[0] && len(f) >= len(open) {
		return false, ""
	}
	return true, open
}

// fenceOf reports whether line opens or closes a fenced code block, and
// its fence.
func fenceOf(line string) (string, bool) {
	s := strings.TrimLeft(line, " ")
	if len(line)-len(s) > 3 {
		return "", false
	}
	for _, c := range []string{"```", "~~~"} {
		if strings.HasPrefix(s, c) {
			n := len(s) - len(strings.TrimLeft(s, c[:1]))
			return strings.Repeat(c[:1], n), true
		}
	}
	return "", false
}

var (
	headingLine = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	headingLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// anchors returns the anchors GitHub gives a Markdown file's headings.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	inFence, fence := false, ""
	for _, line := range strings.Split(text, "\n") {
		if f, ok := fenceOf(line); ok {
			inFence, fence = toggleFence(inFence, fence, f)
			continue
		}
		if inFence {
			continue
		}
		m := headingLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := slug(headingLink.ReplaceAllString(m[2], "$1"))
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// slug is GitHub's anchor for a heading's text: lower case, spaces become
// '-', and punctuation other than '-' and '_' is dropped.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestSlug(t *testing.T) {
	tests := []struct{ heading, want string }{
		{"TCC semantics", "tcc-semantics"},
		{"Idempotency scope of request_id", "idempotency-scope-of-request_id"},
		{"What a coupon applies to (the eligible amount)", "what-a-coupon-applies-to-the-eligible-amount"},
		{"HTTP/JSON API and operator console", "httpjson-api-and-operator-console"},
		{"Barrier cleanup: `internal/janitor`", "barrier-cleanup-internaljanitor"},
		{"Output (`--out`, default `reconcile.out_dir/DATE`)", "output---out-default-reconcileout_dirdate"},
		{"Maker-checker", "maker-checker"},
	}
	for _, tt := range tests {
		if got := slug(tt.heading); got != tt.want {
			t.Errorf("slug(%q) = %q, want %q", tt.heading, got, tt.want)
		}
	}
}

func TestLinksAndAnchors(t *testing.T) {
	text := "# Title\n## Title\n[a](x.md#title-1) ![i](img/p.png) `[not](code.md)`\n```\n[no](fenced.md)\n```\n[ref]: ref.md\n[web](https://example.com)\n"
	var got []string
	for _, l := range links(text) {
		got = append(got, l.target)
	}
	want := []string{"x.md#title-1", "img/p.png", "ref.md", "https://example.com"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("links = %q, want %q", got, want)
	}
	as := anchors(text)
	for _, a := range []string{"title", "title-1"} {
		if !as[a] {
			t.Errorf("anchors lack %q: %v", a, as)
		}
	}
}
