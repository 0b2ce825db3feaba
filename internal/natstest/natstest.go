// Package natstest runs real nats-server processes (Debian's
// /usr/sbin/nats-server, or the one on PATH) with JetStream for
// integration tests, each on a free loopback port with its store in the
// test's temporary directory, stopped when the test ends.
package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/freeport"
)

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 20 * time.Second

// Server is one nats-server process.
type Server struct {
	// URL is the client URL, nats://127.0.0.1:port.
	URL  string
	Port int
	Dir  string

	bin string
	tb  testing.TB
	cmd *exec.Cmd
}

// Binary is the nats-server executable, or "" when there is none.
func Binary() string {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server"
	}
	return ""
}

// Start starts a nats-server with JetStream and stops it at the end of
// the test. A machine without nats-server fails the test (deploy/local/
// deps.sh installs it), unless the test runs under -short, when it skips.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		if testing.Short() {
			tb.Skip("nats-server not installed (deploy/local/deps.sh installs it)")
		}
		tb.Fatal("nats-server not installed (deploy/local/deps.sh installs it)")
	}
	port, err := freeport.Port()
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Port: port, Dir: tb.TempDir(), bin: bin, tb: tb}
	s.Restart()
	tb.Cleanup(s.Kill)
	return s
}

// Restart starts the server again (on the same port and store) after Kill.
func (s *Server) Restart() {
	s.tb.Helper()
	cmd := exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-js", "-sd", filepath.Join(s.Dir, "js"))
	log, err := os.Create(filepath.Join(s.Dir, "nats-server.log"))
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start nats-server: %v", err)
	}
	s.cmd = cmd
	go func() { _ = cmd.Wait(); _ = log.Close() }()
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(s.Dir, "nats-server.log"))
			s.tb.Fatalf("nats-server did not start within %s: %v\n%s", startTimeout, err, b)
		}
		time.Sleep(20 * time.Millisecond) // polling the port until it accepts
	}
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	for i := 0; i < 500; i++ {
		if err := s.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling until the process is gone
	}
	s.cmd = nil
}
