package reconcile

import (
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress is told how a run advances. Implementations must be safe for
// concurrent use.
type Progress interface {
	// Phase starts a phase of total steps (-1: unknown).
	Phase(name string, total int64)
	Add(n int64)
	Done()
}

// NoProgress reports nothing.
type NoProgress struct{}

func (NoProgress) Phase(string, int64) {}
func (NoProgress) Add(int64)           {}
func (NoProgress) Done()               {}

// TerminalProgress draws a progress bar on f when f is a terminal, and is
// silent otherwise (cron, CI, pipes).
func TerminalProgress(f *os.File) Progress {
	if f == nil || !term.IsTerminal(int(f.Fd())) {
		return NoProgress{}
	}
	return &bar{f: f}
}

type bar struct {
	mu sync.Mutex
	f  *os.File
	b  *progressbar.ProgressBar
}

func (p *bar) Phase(name string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.b != nil {
		_ = p.b.Finish()
		_, _ = p.f.WriteString("\n")
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(p.f), progressbar.OptionSetDescription(name),
		progressbar.OptionThrottle(100 * time.Millisecond), progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true), progressbar.OptionSetPredictTime(total > 0),
	}
	if total < 0 {
		opts = append(opts, progressbar.OptionShowIts(), progressbar.OptionSetItsString("rows"))
	}
	p.b = progressbar.NewOptions64(total, opts...)
}

func (p *bar) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.b != nil {
		_ = p.b.Add64(n)
	}
}

func (p *bar) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.b != nil {
		_ = p.b.Finish()
		_, _ = p.f.WriteString("\n")
		p.b = nil
	}
}
