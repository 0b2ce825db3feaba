package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencoupon/coupon/internal/freeport"
)

// process is one child of the stack (a server binary) that can be killed and
// started again with the same command line. It runs in its own process group
// so that a kill reaches everything it spawned, and with a parent-death signal
// so that it dies with us even if we are SIGKILLed before Close runs.
type process struct {
	name string
	args []string
	env  []string
	dir  string
	log  string // file its stdout and stderr go to, appended across restarts
	// noFile, if not zero, lowers the process's RLIMIT_NOFILE right after
	// it starts (connection-flood), before it opens its listeners' and
	// pools' connections.
	noFile uint64

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	starts  int
	logFile *os.File
}

func newProcess(name, dir string, env []string, args ...string) *process {
	return &process{name: name, args: args, env: env, dir: dir, log: filepath.Join(dir, name+".log")}
}

// start runs the process; ready, if not nil, is polled until it returns nil,
// the process exits or ctx ends.
func (p *process) start(ctx context.Context, ready func(context.Context) error) error {
	p.mu.Lock()
	if p.cmd != nil && !p.exited() {
		p.mu.Unlock()
		return fmt.Errorf("%s is already running", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	fmt.Fprintf(f, "\n==== chaos: start %d of %s at %s\n", p.starts+1, p.name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	if p.noFile > 0 {
		lim := unix.Rlimit{Cur: p.noFile, Max: p.noFile}
		if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
			f.Close()
			p.mu.Unlock()
			return fmt.Errorf("start %s: lower its descriptor limit to %d: %w", p.name, p.noFile, err)
		}
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done, p.logFile = cmd, done, f
	p.starts++
	p.mu.Unlock()
	if ready == nil {
		return nil
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting (%v); log %s:\n%s", p.name, cmd.ProcessState, p.log, tail(p.log, 3000))
		case <-ctx.Done():
			p.kill()
			return fmt.Errorf("%s not ready: %w (last: %v); log %s:\n%s", p.name, ctx.Err(), err, p.log, tail(p.log, 3000))
		case <-tick.C:
		}
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the process group, as a crash would, and waits for the exit.
func (p *process) kill() { p.signal(syscall.SIGKILL, 0) }

// stop asks the process group to stop (SIGTERM) and kills it after grace.
func (p *process) stop(grace time.Duration) { p.signal(syscall.SIGTERM, grace) }

func (p *process) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, sig)
	if sig != syscall.SIGKILL {
		t := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-t.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		t.Stop()
	}
	<-p.done
	// Anything the process left in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if p.logFile != nil {
		fmt.Fprintf(p.logFile, "==== chaos: %s ended by %s at %s\n", p.name, sig, time.Now().UTC().Format(time.RFC3339Nano))
		p.logFile.Close()
		p.logFile = nil
	}
}

// running reports whether the process is up.
func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exited()
}

// tail returns the end of a log file, for error messages.
func tail(file string, n int64) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// freePort returns a loopback port for a child that is told its port
// before it starts; see internal/freeport for why not port 0.
func freePort() (int, error) { return freeport.Port() }

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// dialReady is a readiness probe: the TCP port accepts connections.
func dialReady(address string) func(context.Context) error {
	return func(ctx context.Context) error {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// httpReady is a readiness probe: GET url answers 200.
func httpReady(url string) func(context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// lookPath finds a server binary, also in the sbin directories that a normal
// user's PATH lacks (Debian installs mariadbd in /usr/sbin).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/sbin (deploy/local/deps.sh installs it)", name)
}

// runCmd runs a one-shot command (a build, a migration) and returns its
// output in the error when it fails.
func runCmd(ctx context.Context, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, lastLines(string(out), 40))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
