package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dtm-labs/dtm/client/dtmcli/dtmimp"
	"github.com/go-sql-driver/mysql"
)

// TestDTMVersion pins the DTM version the go:linkname declarations in
// dtmsvr.go were written against: their signatures are not checked by the
// compiler.
func TestDTMVersion(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-json", "github.com/dtm-labs/dtm").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/dtm-labs/dtm: %v", err)
	}
	var m struct {
		Version string
		Replace *struct{ Path, Version string }
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("decode go list output: %v", err)
	}
	if m.Version != "v1.19.0" || m.Replace != nil {
		t.Fatalf("github.com/dtm-labs/dtm is %s (replaced by %v); dtmsvr.go's go:linkname declarations are for v1.19.0: check them against the new source", m.Version, m.Replace)
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	for _, addr := range []string{c.HTTPAddr, c.GRPCAddr} {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("default listen address %s is not loopback", addr)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" for valid
	}{
		{"redis", func(c *Config) { c.Store.Driver = Redis; c.Store.Port = 6379 }, ""},
		{"boltdb", func(c *Config) { c.Store.Driver = BoltDB }, ""},
		{"unknown driver", func(c *Config) { c.Store.Driver = "mongo" }, "store.driver"},
		{"redis without prefix", func(c *Config) { c.Store.Driver = Redis; c.Store.RedisPrefix = "" }, "redis_prefix"},
		{"db name with dsn syntax", func(c *Config) { c.Store.DB = "dtm?x=1" }, "store.db"},
		{"bad isolation", func(c *Config) { c.Store.Isolation = "read committed" }, "store.isolation"},
		{"no connections", func(c *Config) { c.Store.MaxOpenConns = 0 }, "max_open_conns"},
		{"more idle than open", func(c *Config) { c.Store.MaxIdleConns = 31 }, "max_idle_conns"},
		{"lease shorter than a call", func(c *Config) { c.RetryInterval = 3 * time.Second }, "retry_interval"},
		{"timeout before retry", func(c *Config) { c.TimeoutToFail = 5 * time.Second }, "timeout_to_fail"},
		{"same addresses", func(c *Config) { c.GRPCAddr = c.HTTPAddr }, "both"},
		{"bad address", func(c *Config) { c.HTTPAddr = "localhost" }, "http_addr"},
		{"no cron worker", func(c *Config) { c.CronWorkers = 0 }, "cron_workers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestDTMConfig(t *testing.T) {
	c := DefaultConfig()
	c.RetryInterval = 2500 * time.Millisecond
	c.RequestTimeout = 2 * time.Second
	got := dtmConfig(c, "tx_isolation=%27READ-COMMITTED%27")

	if got.RetryInterval != 3 || got.RequestTimeout != 2 || got.TimeoutToFail != 35 {
		t.Errorf("intervals = %d, %d, %d s; want 3, 2, 35 (rounded up)", got.RetryInterval, got.RequestTimeout, got.TimeoutToFail)
	}
	if got.Store.MaxOpenConns != 30 || got.Store.MaxIdleConns != 30 || got.Store.ConnMaxLifeTime != 5 {
		t.Errorf("pool = %d open, %d idle, %d min; want 30, 30, 5", got.Store.MaxOpenConns, got.Store.MaxIdleConns, got.Store.ConnMaxLifeTime)
	}
	if got.UpdateBranchSync != 0 || got.UpdateBranchAsyncGoroutineNum != 2 {
		t.Errorf("branch updates: sync %d, %d flushers; want 0, 2", got.UpdateBranchSync, got.UpdateBranchAsyncGoroutineNum)
	}
	if got.HTTPPort != 36789 || got.GrpcPort != 36790 {
		t.Errorf("ports = %d, %d; want 36789, 36790", got.HTTPPort, got.GrpcPort)
	}

	// The DSN DTM builds from it keeps DTM's parameters and adds ours.
	dsn := dtmimp.GetDsn(got.Store.GetDBConf())
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("ParseDSN(%q) = %v", dsn, err)
	}
	if cfg.DBName != "coupon_dtm" || !cfg.ParseTime || !cfg.InterpolateParams || cfg.Loc.String() != "Local" {
		t.Errorf("DSN %q: db %q parseTime %v interpolateParams %v loc %v; want coupon_dtm, true, true, Local",
			dsn, cfg.DBName, cfg.ParseTime, cfg.InterpolateParams, cfg.Loc)
	}
	if got, want := fmt.Sprint(cfg.Params), "map[tx_isolation:'READ-COMMITTED']"; got != want {
		t.Errorf("DSN %q: session variables %s, want %s", dsn, got, want)
	}
	if strings.Contains(cfg.ConnectionAttributes, ":") {
		t.Errorf("DSN %q: connection attributes %q would be sent", dsn, cfg.ConnectionAttributes)
	}
}

func TestTransient(t *testing.T) {
	deadlock := &mysql.MySQLError{Number: 1213, SQLState: [5]byte{'4', '0', '0', '0', '1'}, Message: "Deadlock found"}
	tests := []struct {
		err  error
		want bool
	}{
		{deadlock, true},
		{fmt.Errorf("save branches: %w", deadlock), true},
		{&mysql.MySQLError{Number: 1205, Message: "Lock wait timeout exceeded"}, true},
		{fmt.Errorf("dtm panic: %v", deadlock), true},
		{&mysql.MySQLError{Number: 1062, Message: "Duplicate entry"}, false},
		{errors.New("no trans with gid"), false},
	}
	for _, tt := range tests {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
