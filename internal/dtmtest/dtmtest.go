// Package dtmtest runs real DTM coordinators (the cmd/coordinator binary,
// built once per test binary) for integration tests, each on free loopback
// ports with a fresh store that is removed when the test ends.
//
// It links no DTM server code, so tests that use the DTM client
// (github.com/dtm-labs/client) can use it.
package dtmtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/internal/freeport"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/sql/dtmstore"
)

// startTimeout bounds how long a coordinator may take to answer.
const startTimeout = 60 * time.Second

// defaults make recovery fast and pools small: a test package may run
// several coordinators against the shared MariaDB.
var defaults = map[string]string{
	"log.level":               "warn",
	"retry_interval":          "3s",
	"request_timeout":         "2s",
	"cron.interval":           "200ms",
	"shutdown.timeout":        "5s",
	"store.max_open_conns":    "5",
	"store.max_idle_conns":    "5",
	"store.conn_max_lifetime": "5m",
}

// Option adjusts the coordinators Start runs.
type Option func(*options)

type options struct {
	settings map[string]string
	redis    bool
}

// Set sets a coordinator config key, as named in
// deploy/local/coordinator.yaml, e.g. Set("retry_interval", "5s").
func Set(key, value string) Option {
	return func(o *options) { o.settings[key] = value }
}

// RedisStore keeps transactions in the test Redis (testenv.RedisAddr) under
// a fresh key prefix instead of in a MySQL database.
func RedisStore() Option {
	return func(o *options) { o.redis = true }
}

// Coordinator is a coordinator process.
type Coordinator struct {
	// GRPCAddr and HTTPAddr are where it listens, as "127.0.0.1:port".
	GRPCAddr string
	HTTPAddr string
	// StoreDSN is the DSN of its MySQL store database; empty with
	// RedisStore.
	StoreDSN string

	tb   testing.TB
	env  []string // store settings shared with twins
	dir  string
	mu   sync.Mutex
	proc *process
	logs *testenv.Buffer
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returns
}

// Start starts a coordinator with a new, empty store and stops it, and
// removes the store, when the test ends.
func Start(tb testing.TB, opts ...Option) *Coordinator {
	tb.Helper()
	o := options{settings: map[string]string{}}
	for k, v := range defaults {
		o.settings[k] = v
	}
	for _, opt := range opts {
		opt(&o)
	}

	var storeDSN string
	if o.redis {
		host, port := splitAddr(tb, testenv.RedisAddr())
		prefix := "{" + testenv.Unique(tb) + "}:"
		testenv.MustRedis(tb, prefix) // removes the keys when the test ends
		o.settings["store.driver"] = "redis"
		o.settings["store.host"] = host
		o.settings["store.port"] = port
		o.settings["store.redis_prefix"] = prefix
	} else {
		storeDSN = mustStore(tb)
		cfg, err := mysql.ParseDSN(storeDSN)
		if err != nil {
			tb.Fatalf("parse store dsn: %v", err)
		}
		host, port := splitAddr(tb, cfg.Addr)
		o.settings["store.driver"] = "mysql"
		o.settings["store.host"] = host
		o.settings["store.port"] = port
		o.settings["store.user"] = cfg.User
		o.settings["store.password"] = cfg.Passwd
		o.settings["store.db"] = cfg.DBName
	}

	env := make([]string, 0, len(o.settings))
	for k, v := range o.settings {
		env = append(env, envName(k)+"="+v)
	}
	c := &Coordinator{tb: tb, env: env, StoreDSN: storeDSN}
	c.startFresh()
	return c
}

// StartTwin starts another coordinator sharing c's store (and settings) on
// ports of its own.
func (c *Coordinator) StartTwin() *Coordinator {
	c.tb.Helper()
	twin := &Coordinator{tb: c.tb, env: c.env, StoreDSN: c.StoreDSN}
	twin.startFresh()
	return twin
}

// Kill kills the coordinator with SIGKILL, as a crash would, and waits for
// it to exit.
func (c *Coordinator) Kill() {
	c.tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.signal(syscall.SIGKILL, 0)
}

// Stop stops the coordinator with SIGTERM, killing it if it has not exited
// within 15s.
func (c *Coordinator) Stop() {
	c.tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.signal(syscall.SIGTERM, 15*time.Second)
}

// Restart starts the coordinator again on the same ports and store, killing
// it first if it is running, and waits until it answers.
func (c *Coordinator) Restart() {
	c.tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.signal(syscall.SIGKILL, 0)
	if err := c.start(); err != nil {
		c.tb.Fatalf("restart coordinator: %v\n%s", err, c.logs.Tail(8000))
	}
}

// Logs returns what the coordinator has logged so far, across restarts.
func (c *Coordinator) Logs() string { return c.logs.String() }

// startFresh starts the coordinator on new free ports, retrying when
// another process took a port between picking and binding it.
func (c *Coordinator) startFresh() {
	c.tb.Helper()
	c.logs = &testenv.Buffer{}
	c.dir = c.tb.TempDir() // working directory, where a boltdb store would go
	c.tb.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.signal(syscall.SIGTERM, 15*time.Second)
		if c.tb.Failed() {
			c.tb.Logf("coordinator %s logs:\n%s", c.GRPCAddr, c.logs.Tail(8000))
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	for range 3 {
		c.HTTPAddr, c.GRPCAddr = freeAddr(c.tb), freeAddr(c.tb)
		if err = c.start(); err == nil || !strings.Contains(c.logs.String(), "address already in use") {
			break
		}
	}
	if err != nil {
		c.tb.Fatalf("start coordinator: %v\n%s", err, c.logs.Tail(8000))
	}
}

// start runs the binary and waits until it answers HTTP. c.mu is held.
func (c *Coordinator) start() error {
	bin, err := binary()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve")
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Env = append(cmd.Env,
		envName("http.addr")+"="+c.HTTPAddr,
		envName("grpc.addr")+"="+c.GRPCAddr,
		"LOG_LEVEL=WARN", // read by DTM's logger before the coordinator configures it
	)
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	c.proc = p

	client := &http.Client{Timeout: time.Second}
	url := "http://" + c.HTTPAddr + "/api/ping"
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("coordinator exited: %v", cmd.ProcessState)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			c.signal(syscall.SIGKILL, 0)
			return fmt.Errorf("coordinator did not answer %s within %s", url, startTimeout)
		}
	}
}

// signal sends sig to the running process, if any, and waits for it to
// exit, sending SIGKILL after grace (at once if grace is 0). c.mu is held.
func (c *Coordinator) signal(sig syscall.Signal, grace time.Duration) {
	p := c.proc
	if p == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
		if grace > 0 {
			t := time.NewTimer(grace)
			select {
			case <-p.done:
			case <-t.C:
				c.tb.Errorf("coordinator %s did not stop within %s; killing it", c.GRPCAddr, grace)
				_ = p.cmd.Process.Kill()
			}
			t.Stop()
		}
		<-p.done
	}
	c.proc = nil
}

// mustStore creates a store database with the DTM store tables and returns
// its DSN.
func mustStore(tb testing.TB) string {
	tb.Helper()
	dsn := testenv.MustDatabase(tb, testenv.Unique(tb))
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dtmstore.Apply(ctx, db); err != nil {
		tb.Fatalf("%v", err)
	}
	return dsn
}

func envName(key string) string {
	return "COUPON_COORDINATOR_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func splitAddr(tb testing.TB, addr string) (host, port string) {
	tb.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("address %q: %v", addr, err)
	}
	return host, port
}

// freeAddr returns a loopback address for the coordinator, which is told
// its ports before it starts; see internal/freeport for why not port 0.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	a, err := freeport.Addr()
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

var build struct {
	once sync.Once
	path string
	err  error
}

// binary builds ./cmd/coordinator once per test binary. Under go test it
// goes into the go command's work directory beside the test binary, which
// go test removes afterwards; otherwise into a new temporary directory.
func binary() (string, error) {
	build.once.Do(func() {
		build.path, build.err = buildBinary()
	})
	return build.path, build.err
}

func buildBinary() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the module")
	}
	parent := ""
	if exe, err := os.Executable(); err == nil && strings.Contains(exe, "go-build") {
		parent = filepath.Dir(exe)
	}
	dir, err := os.MkdirTemp(parent, "dtmtest-")
	if err != nil {
		return "", fmt.Errorf("build coordinator: %w", err)
	}
	bin := filepath.Join(dir, "coordinator")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/coordinator")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/coordinator: %w\n%s", err, out)
	}
	return bin, nil
}
