package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/config"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/gateway"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/internal/tracing"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
)

// clearEnv unsets every COUPON_* variable for the test, so that what is
// compared is the defaults alone.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "COUPON_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// TestDefaultsUnchanged pins what `coupon serve` runs with when given no
// file and no environment: the values main's loadConfig produced before the
// keys were described in internal/config, written out by hand.
func TestDefaultsUnchanged(t *testing.T) {
	clearEnv(t)
	got, level, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	want := app.Config{
		GRPCAddr: "127.0.0.1:9090",
		OpsAddr:  "127.0.0.1:9091",
		NodeID:   1,
		Auth: auth.Config{
			Enabled: true, Callers: []auth.Caller{}, Coordinator: "127.0.0.1:36789",
			FailureRPS: 1, FailureBurst: 10,
		},
		RateLimit: app.RateLimit{PerCaller: 0, Burst: 1000, Branch: 2000, BranchBurst: 4000, Limits: []app.Limit{}},
		Deadlines: app.Deadlines{
			User: 500 * time.Millisecond, Branch: 3 * time.Second, Admin: 5 * time.Second,
			Methods: map[string]time.Duration{},
		},
		Limits: app.Limits{
			MaxConcurrent: 1024, Methods: map[string]int{},
			MaxRecvBytes: 1 << 20, MaxSendBytes: 16 << 20, MaxHeaderBytes: 16 << 10, MaxConcurrentStreams: 0,
		},
		Shutdown:            app.Shutdown{Delay: 0, Timeout: 10 * time.Second},
		ReadinessInterval:   2 * time.Second,
		Tracing:             tracing.Config{SampleRatio: 1, ServiceName: "coupon"},
		StockMetricsRefresh: 5 * time.Second,
		StuckLockedAfter:    10 * time.Minute,
		MySQL: couponmysql.Config{
			MainDSN:        "root@tcp(127.0.0.1:3306)/coupon_main",
			ShardDSNs:      []string{"root@tcp(127.0.0.1:3306)/coupon_shard_0", "root@tcp(127.0.0.1:3306)/coupon_shard_1"},
			TablesPerShard: 8, Slots: 0, MaxOpenConns: 16, MaxIdleConns: 16,
		},
		Redis: app.RedisConfig{
			Addrs: []string{"127.0.0.1:6379"}, Prefix: "coupon:", PoolSize: 128,
			DialTimeout: 2 * time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		},
		Service: participant.Config{
			ClaimWriteTimeout: 2 * time.Second, StockSettle: 3 * time.Second,
			RequestInFlightTTL: 10 * time.Second, RequestDoneTTL: 24 * time.Hour,
			MaxSubStock: 64, SoldOutRecheck: 500 * time.Millisecond,
			TemplateRefresh: time.Second, TemplateRedisTTL: time.Minute, MaxDailyUses: 3,
			SweepInterval: 30 * time.Second, SweepBatch: 500, AuditInterval: time.Minute,
		},
		HTTP: gateway.Config{Addr: "127.0.0.1:9092", Console: console.Config{
			DTMHTTPAddr: "127.0.0.1:36789", SigninFailures: 5, SigninWindow: 15 * time.Minute,
		}},
		Barrier: app.BarrierJanitor{
			Interval: 10 * time.Minute, Retention: 168 * time.Hour, MaxAge: 720 * time.Hour, Batch: 500,
			Coordinator: "127.0.0.1:36789",
		},
		// Events are off (no URL); the rest applies once one is set.
		Events: relay.Config{
			Stream: "COUPON_EVENTS", SubjectPrefix: "coupon.events.", Batch: 1000, Poll: 50 * time.Millisecond,
			DuplicateWindow: 2 * time.Minute, MaxAge: 168 * time.Hour, LeaseTTL: 10 * time.Second, AckTimeout: 5 * time.Second,
		},
		Webhooks: app.Webhooks{
			Enabled: true, Timeout: 10 * time.Second, Horizon: 24 * time.Hour, MaxBackoff: time.Hour,
			DisableAfter: 20, Refresh: 5 * time.Second, Retention: 30 * 24 * time.Hour,
		},
		Conns: app.Connections{GRPC: 2048, HTTP: 1024, Ops: 32},
		Keepalive: app.Keepalive{
			HandshakeTimeout: 10 * time.Second, MaxIdle: 2 * time.Minute,
			Time: time.Minute, Timeout: 20 * time.Second, MinTime: 10 * time.Second,
		},
		Ops:   app.OpsServer{ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second},
		Pprof: app.Pprof{Hosts: []string{"localhost", "127.0.0.1", "::1"}, WriteTimeout: 60 * time.Second},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults changed (-before +now):\n%s", diff)
	}
	if level != "info" {
		t.Errorf("log.level defaults to %q, want info", level)
	}
}

// TestEnvironmentOverrides: each kind of key still takes its value from
// COUPON_<KEY>, over the file.
func TestEnvironmentOverrides(t *testing.T) {
	clearEnv(t)
	for k, v := range map[string]string{
		"COUPON_GRPC_ADDR":                   "0.0.0.0:19090",                          // string
		"COUPON_MYSQL_TABLES_PER_SHARD":      "4",                                      // int
		"COUPON_RISK_MAX_DAILY_USES":         "-1",                                     // int32
		"COUPON_NODE_ID":                     "7",                                      // int64
		"COUPON_REDIS_CLUSTER":               "true",                                   // bool
		"COUPON_TRACING_SAMPLE_RATIO":        "0.25",                                   // float
		"COUPON_CLAIM_WRITE_TIMEOUT":         "1500ms",                                 // duration
		"COUPON_DEADLINE_ADMIN":              "0",                                      // duration, 0 = no bound
		"COUPON_MYSQL_SHARD_DSNS":            "a/s0, b/s1,c/s2",                        // list
		"COUPON_MYSQL_SLOT_MAP":              "0-511:0,512-1023:1",                     // parsed list
		"COUPON_DEADLINE_METHODS":            `{"CouponService/ListUserCoupons":"1s"}`, // nested map
		"COUPON_GRPC_MAX_CONCURRENT_STREAMS": "100",                                    // uint32
		"COUPON_DTM_HTTP_ADDR":               "dtm:36789",                              // one key, two fields
		"COUPON_LOG_LEVEL":                   "debug",
	} {
		t.Setenv(k, v)
	}
	cfg, level, err := loadConfig("../../deploy/local/coupon.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key       string
		got, want any
	}{
		{"grpc.addr", cfg.GRPCAddr, "0.0.0.0:19090"},
		{"mysql.tables_per_shard", cfg.MySQL.TablesPerShard, 4},
		{"risk.max_daily_uses", cfg.Service.MaxDailyUses, int32(-1)},
		{"node_id", cfg.NodeID, int64(7)},
		{"redis.cluster", cfg.Redis.Cluster, true},
		{"tracing.sample_ratio", cfg.Tracing.SampleRatio, 0.25},
		{"claim.write_timeout", cfg.Service.ClaimWriteTimeout, 1500 * time.Millisecond},
		{"deadline.admin", cfg.Deadlines.Admin, time.Duration(-1)},
		{"mysql.shard_dsns", cfg.MySQL.ShardDSNs, []string{"a/s0", "b/s1", "c/s2"}},
		{"mysql.slot_map", cfg.MySQL.SlotMap, []couponmysql.SlotRange{{Lo: 0, Hi: 511, Table: 0}, {Lo: 512, Hi: 1023, Table: 1}}},
		{"deadline.methods", cfg.Deadlines.Methods, map[string]time.Duration{"CouponService/ListUserCoupons": time.Second}},
		{"grpc.max_concurrent_streams", cfg.Limits.MaxConcurrentStreams, uint32(100)},
		{"dtm.http_addr (auth)", cfg.Auth.Coordinator, "dtm:36789"},
		{"dtm.http_addr (barrier)", cfg.Barrier.Coordinator, "dtm:36789"},
		{"log.level", level, "debug"},
		{"mysql.main_dsn (from the file)", cfg.MySQL.MainDSN, "root@tcp(127.0.0.1:3306)/coupon_main"},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.key, diff)
		}
	}
}

// TestReconcileDefaultsUnchanged pins the reconcile command's keys with no
// file and no environment, as main's second viper instance read them (a
// memory limit of "200MiB" is not a size viper reads: it gave 0, no limit).
func TestReconcileDefaultsUnchanged(t *testing.T) {
	clearEnv(t)
	c, err := loadReconcileConfig("")
	if err != nil {
		t.Fatal(err)
	}
	want := config.Reconcile{
		Source: "mysql", OrdersDSN: "root@tcp(127.0.0.1:3306)/shop_order", PaymentsDSN: "root@tcp(127.0.0.1:3306)/shop_payment",
		StateDSN: "", Zone: "UTC", Grace: 10 * time.Minute, PendingDays: 3, OutDir: "reconcile-reports", SpillDir: "",
		MemoryLimit: 200 << 20, DTMHTTP: "127.0.0.1:36789", DTMGRPC: "127.0.0.1:36790",
		DTMTimeoutToFail: 35 * time.Second, DTMRetryBudget: 5 * time.Minute,
		CouponAddr: "127.0.0.1:9090", CouponToken: "", Schedule: "30 0 * * *", ScheduleRepair: "dry-run", Lease: 10 * time.Minute,
	}
	if diff := cmp.Diff(want, c.Reconcile); diff != "" {
		t.Errorf("reconcile defaults changed (-before +now):\n%s", diff)
	}
	if got, want := c.stateDSN(), "root@tcp(127.0.0.1:3306)/coupon_main"; got != want {
		t.Errorf("state database %q, want mysql.main_dsn %q", got, want)
	}
	if c.level != "info" || len(c.shardDSNs) != 2 {
		t.Errorf("service keys: level %q, shards %q", c.level, c.shardDSNs)
	}
}

// TestReconcileEnvironment: reconcile's keys come from COUPON_RECONCILE_*
// over the file, and reconcile.coupon_addr follows grpc.addr unless set.
func TestReconcileEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv("COUPON_GRPC_ADDR", "coupon:9090")
	t.Setenv("COUPON_RECONCILE_GRACE", "20m")
	t.Setenv("COUPON_RECONCILE_PENDING_DAYS", "5")
	t.Setenv("COUPON_RECONCILE_MEMORY_LIMIT", "100mb")
	t.Setenv("COUPON_RECONCILE_COUPON_TOKEN", "t")
	c, err := loadReconcileConfig("../../deploy/local/coupon.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.CouponAddr, c.Grace, c.PendingDays, c.MemoryLimit, c.CouponToken, c.OutDir}
	want := []any{"coupon:9090", 20 * time.Minute, 5, uint(100 << 20), "t", ".run/reconcile"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reconcile from the environment and the file (-want +got):\n%s", diff)
	}
	t.Setenv("COUPON_RECONCILE_COUPON_ADDR", "repairs:9090")
	if c, err = loadReconcileConfig(""); err != nil {
		t.Fatal(err)
	}
	if c.CouponAddr != "repairs:9090" {
		t.Errorf("reconcile.coupon_addr set: %q, want repairs:9090", c.CouponAddr)
	}
}
