package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/gateway"
	"github.com/opencoupon/coupon/internal/tracing"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
)

// loadConfig reads the optional YAML file and COUPON_* environment
// overrides (key grpc.addr ← COUPON_GRPC_ADDR). Lists in the environment
// are comma-separated.
func loadConfig(file string) (app.Config, string, error) {
	v := viper.New()
	d := participant.DefaultConfig()
	defaults := map[string]any{
		"grpc.addr":                    "127.0.0.1:9090",
		"ops.addr":                     "127.0.0.1:9091",
		"http.addr":                    "127.0.0.1:9092",
		"http.tls.cert_file":           "",
		"http.tls.key_file":            "",
		"console.dtm_http_addr":        "127.0.0.1:36789",
		"console.secure_cookies":       false,
		"console.signin_failures":      console.DefaultSigninFailures,
		"console.signin_window":        console.DefaultSigninWindow.String(),
		"http.trusted_proxies":         []string{},
		"node_id":                      1,
		"grpc.tls.cert_file":           "",
		"grpc.tls.key_file":            "",
		"grpc.tls.client_ca_file":      "",
		"grpc.tls.require_client_cert": false,
		"grpc.max_recv_bytes":          app.DefaultMaxRecvBytes,
		"grpc.max_send_bytes":          app.DefaultMaxSendBytes,
		"grpc.max_header_bytes":        app.DefaultMaxHeaderBytes,
		"grpc.max_concurrent_streams":  0,
		"grpc.max_connections":         app.DefaultGRPCMaxConns,
		"http.max_connections":         app.DefaultHTTPMaxConns,
		"ops.max_connections":          app.DefaultOpsMaxConns,
		"grpc.handshake_timeout":       app.DefaultHandshakeTimeout.String(),
		"grpc.keepalive.max_idle":      app.DefaultGRPCMaxIdle.String(),
		"grpc.keepalive.time":          app.DefaultKeepaliveTime.String(),
		"grpc.keepalive.timeout":       app.DefaultKeepaliveTimeout.String(),
		"grpc.keepalive.min_time":      app.DefaultKeepaliveMinTime.String(),
		"ops.read_timeout":             app.DefaultOpsReadTimeout.String(),
		"ops.write_timeout":            app.DefaultOpsWriteTimeout.String(),
		"ops.idle_timeout":             app.DefaultOpsIdleTimeout.String(),
		"pprof.addr":                   "",
		"pprof.hosts":                  []string{"localhost", "127.0.0.1", "::1"},
		"pprof.write_timeout":          app.DefaultPprofWriteTimeout.String(),
		"auth.enabled":                 true,
		"auth.callers":                 []any{},
		"auth.failure_rps":             auth.DefaultFailureRPS,
		"auth.failure_burst":           auth.DefaultFailureBurst,
		"ratelimit.per_caller_rps":     0,
		"ratelimit.burst":              1000,
		"ratelimit.branch_rps":         app.DefaultBranchRPS,
		"ratelimit.branch_burst":       app.DefaultBranchBurst,
		"ratelimit.limits":             []any{},
		"deadline.user":                app.DefaultUserDeadline.String(),
		"deadline.branch":              app.DefaultBranchDeadline.String(),
		"deadline.admin":               app.DefaultAdminDeadline.String(),
		"deadline.methods":             map[string]any{},
		"concurrency.max_per_method":   app.DefaultMaxConcurrent,
		"concurrency.methods":          map[string]any{},
		"shutdown.delay":               "0s",
		"shutdown.timeout":             "10s",
		"barrier.interval":             "10m",
		"barrier.retention":            "168h",
		"barrier.max_age":              "720h",
		"barrier.batch":                500,
		"barrier.unknown_finished":     false,
		"dtm.http_addr":                "127.0.0.1:36789",
		"readiness.interval":           "2s",
		"tracing.otlp.endpoint":        "",
		"tracing.otlp.insecure":        false,
		"tracing.sample_ratio":         1.0,
		"tracing.service_name":         "coupon",
		"metrics.stock_refresh":        "5s",
		"metrics.stuck_locked_after":   "10m",
		"redis.dial_timeout":           "2s",
		"redis.read_timeout":           "1s",
		"redis.write_timeout":          "1s",
		"log.level":                    "info",
		"mysql.main_dsn":               "root@tcp(127.0.0.1:3306)/coupon_main",
		"mysql.shard_dsns":             []string{"root@tcp(127.0.0.1:3306)/coupon_shard_0", "root@tcp(127.0.0.1:3306)/coupon_shard_1"},
		"mysql.tables_per_shard":       8,
		"mysql.slots":                  0,
		"mysql.slot_map":               []string{},
		"mysql.max_open_conns":         16,
		"mysql.max_idle_conns":         16,
		"redis.addrs":                  []string{"127.0.0.1:6379"},
		"redis.cluster":                false,
		"redis.password":               "",
		"redis.db":                     0,
		"redis.key_prefix":             "coupon:",
		"redis.pool_size":              128,
		"claim.write_timeout":          d.ClaimWriteTimeout.String(),
		"claim.inflight_ttl":           d.RequestInFlightTTL.String(),
		"claim.request_ttl":            d.RequestDoneTTL.String(),
		"claim.soldout_recheck":        d.SoldOutRecheck.String(),
		"stock.settle":                 d.StockSettle.String(),
		"stock.max_sub_keys":           d.MaxSubStock,
		"stock.audit_interval":         d.AuditInterval.String(),
		"expiry.sweep_interval":        d.SweepInterval.String(),
		"expiry.batch":                 d.SweepBatch,
		"cache.template_refresh":       d.TemplateRefresh.String(),
		"cache.template_redis_ttl":     d.TemplateRedisTTL.String(),
		"risk.max_daily_uses":          d.MaxDailyUses,
	}
	for k, val := range defaults {
		v.SetDefault(k, val)
	}
	v.SetEnvPrefix("COUPON")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return app.Config{}, "", fmt.Errorf("read config %s: %w", file, err)
		}
	}
	list := func(key string) []string {
		var out []string
		for _, s := range v.GetStringSlice(key) {
			for _, p := range strings.Split(s, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	var slotMap []couponmysql.SlotRange
	for _, r := range list("mysql.slot_map") {
		sr, err := couponmysql.ParseSlotRange(r)
		if err != nil {
			return app.Config{}, "", fmt.Errorf("mysql.slot_map: %w", err)
		}
		slotMap = append(slotMap, sr)
	}
	var callers []auth.Caller
	if err := structured(v, "auth.callers", &callers); err != nil {
		return app.Config{}, "", err
	}
	var limits []app.Limit
	if err := structured(v, "ratelimit.limits", &limits); err != nil {
		return app.Config{}, "", err
	}
	deadlines, err := durations(v, "deadline.methods")
	if err != nil {
		return app.Config{}, "", err
	}
	cfg := app.Config{
		GRPCAddr: v.GetString("grpc.addr"),
		OpsAddr:  v.GetString("ops.addr"),
		NodeID:   v.GetInt64("node_id"),
		TLS: app.TLSConfig{
			CertFile:          v.GetString("grpc.tls.cert_file"),
			KeyFile:           v.GetString("grpc.tls.key_file"),
			ClientCAFile:      v.GetString("grpc.tls.client_ca_file"),
			RequireClientCert: v.GetBool("grpc.tls.require_client_cert"),
		},
		Auth: auth.Config{
			Enabled: v.GetBool("auth.enabled"), Callers: callers, Coordinator: v.GetString("dtm.http_addr"),
			FailureRPS: nonZeroFloat(v.GetFloat64("auth.failure_rps")), FailureBurst: v.GetInt("auth.failure_burst"),
		},
		RateLimit: app.RateLimit{
			PerCaller: v.GetFloat64("ratelimit.per_caller_rps"), Burst: v.GetInt("ratelimit.burst"),
			Branch: nonZeroFloat(v.GetFloat64("ratelimit.branch_rps")), BranchBurst: v.GetInt("ratelimit.branch_burst"),
			Limits: limits,
		},
		Deadlines: app.Deadlines{
			User:    nonZero(v.GetDuration("deadline.user")),
			Branch:  nonZero(v.GetDuration("deadline.branch")),
			Admin:   nonZero(v.GetDuration("deadline.admin")),
			Methods: deadlines,
		},
		Limits: app.Limits{
			MaxConcurrent:        nonZeroInt(v.GetInt("concurrency.max_per_method")),
			Methods:              ints(v, "concurrency.methods"),
			MaxRecvBytes:         v.GetInt("grpc.max_recv_bytes"),
			MaxSendBytes:         v.GetInt("grpc.max_send_bytes"),
			MaxHeaderBytes:       v.GetInt("grpc.max_header_bytes"),
			MaxConcurrentStreams: v.GetUint32("grpc.max_concurrent_streams"),
		},
		Conns: app.Connections{
			GRPC: nonZeroInt(v.GetInt("grpc.max_connections")),
			HTTP: nonZeroInt(v.GetInt("http.max_connections")),
			Ops:  nonZeroInt(v.GetInt("ops.max_connections")),
		},
		Keepalive: app.Keepalive{
			HandshakeTimeout: v.GetDuration("grpc.handshake_timeout"),
			MaxIdle:          v.GetDuration("grpc.keepalive.max_idle"),
			Time:             v.GetDuration("grpc.keepalive.time"),
			Timeout:          v.GetDuration("grpc.keepalive.timeout"),
			MinTime:          v.GetDuration("grpc.keepalive.min_time"),
		},
		Ops: app.OpsServer{
			ReadTimeout:  v.GetDuration("ops.read_timeout"),
			WriteTimeout: v.GetDuration("ops.write_timeout"),
			IdleTimeout:  v.GetDuration("ops.idle_timeout"),
		},
		Pprof: app.Pprof{
			Addr:         v.GetString("pprof.addr"),
			Hosts:        list("pprof.hosts"),
			WriteTimeout: v.GetDuration("pprof.write_timeout"),
		},
		Shutdown: app.Shutdown{Delay: v.GetDuration("shutdown.delay"), Timeout: v.GetDuration("shutdown.timeout")},
		Barrier: app.BarrierJanitor{
			Interval: v.GetDuration("barrier.interval"), Retention: v.GetDuration("barrier.retention"),
			MaxAge: v.GetDuration("barrier.max_age"), Batch: v.GetInt("barrier.batch"),
			Coordinator: v.GetString("dtm.http_addr"), UnknownFinished: v.GetBool("barrier.unknown_finished"),
		},
		ReadinessInterval: v.GetDuration("readiness.interval"),
		Tracing: tracing.Config{
			OTLPEndpoint: v.GetString("tracing.otlp.endpoint"),
			Insecure:     v.GetBool("tracing.otlp.insecure"),
			SampleRatio:  v.GetFloat64("tracing.sample_ratio"),
			ServiceName:  v.GetString("tracing.service_name"),
		},
		StockMetricsRefresh: v.GetDuration("metrics.stock_refresh"),
		StuckLockedAfter:    v.GetDuration("metrics.stuck_locked_after"),
		HTTP: gateway.Config{Addr: v.GetString("http.addr"), Console: console.Config{
			DTMHTTPAddr:    v.GetString("console.dtm_http_addr"),
			TrustedProxies: list("http.trusted_proxies"),
			SecureCookies:  v.GetBool("console.secure_cookies"),
			SigninFailures: nonZeroInt(v.GetInt("console.signin_failures")),
			SigninWindow:   v.GetDuration("console.signin_window"),
		}},
		MySQL: couponmysql.Config{
			MainDSN:        v.GetString("mysql.main_dsn"),
			ShardDSNs:      list("mysql.shard_dsns"),
			TablesPerShard: v.GetInt("mysql.tables_per_shard"),
			Slots:          v.GetInt("mysql.slots"),
			SlotMap:        slotMap,
			MaxOpenConns:   v.GetInt("mysql.max_open_conns"),
			MaxIdleConns:   v.GetInt("mysql.max_idle_conns"),
		},
		Redis: app.RedisConfig{
			Addrs:    list("redis.addrs"),
			Cluster:  v.GetBool("redis.cluster"),
			Password: v.GetString("redis.password"),
			DB:       v.GetInt("redis.db"),
			Prefix:   v.GetString("redis.key_prefix"),
			PoolSize: v.GetInt("redis.pool_size"),

			DialTimeout:  v.GetDuration("redis.dial_timeout"),
			ReadTimeout:  v.GetDuration("redis.read_timeout"),
			WriteTimeout: v.GetDuration("redis.write_timeout"),
		},
		Service: participant.Config{
			ClaimWriteTimeout:  v.GetDuration("claim.write_timeout"),
			RequestInFlightTTL: v.GetDuration("claim.inflight_ttl"),
			RequestDoneTTL:     v.GetDuration("claim.request_ttl"),
			SoldOutRecheck:     v.GetDuration("claim.soldout_recheck"),
			StockSettle:        v.GetDuration("stock.settle"),
			MaxSubStock:        v.GetInt32("stock.max_sub_keys"),
			TemplateRefresh:    v.GetDuration("cache.template_refresh"),
			TemplateRedisTTL:   v.GetDuration("cache.template_redis_ttl"),
			MaxDailyUses:       v.GetInt32("risk.max_daily_uses"),
			AuditInterval:      v.GetDuration("stock.audit_interval"),
			SweepInterval:      v.GetDuration("expiry.sweep_interval"),
			SweepBatch:         v.GetInt("expiry.batch"),
		},
	}
	cfg.HTTP.TLS = gateway.TLSConfig{CertFile: v.GetString("http.tls.cert_file"), KeyFile: v.GetString("http.tls.key_file")}
	return cfg, v.GetString("log.level"), nil
}

// structured decodes a list-of-objects key: from YAML, or from its
// environment variable as JSON (COUPON_AUTH_CALLERS='[{"identity":...}]').
func structured(v *viper.Viper, key string, out any) error {
	if s, ok := v.Get(key).(string); ok {
		if strings.TrimSpace(s) == "" {
			return nil
		}
		if err := json.Unmarshal([]byte(s), out); err != nil {
			return fmt.Errorf("%s: not a JSON list: %w", key, err)
		}
		return nil
	}
	if err := v.UnmarshalKey(key, out); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// durations reads a map of method to duration.
func durations(v *viper.Viper, key string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for k, s := range v.GetStringMapString(key) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", key, k, err)
		}
		out[k] = d
	}
	return out, nil
}

func ints(v *viper.Viper, key string) map[string]int {
	out := map[string]int{}
	for k := range v.GetStringMap(key) {
		out[k] = v.GetInt(key + "." + k)
	}
	return out
}

// nonZero maps a configured 0 (no bound) to the negative value app.Config
// uses for "off", since app.Config's zero means "default".
func nonZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func nonZeroInt(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func nonZeroFloat(f float64) float64 {
	if f == 0 {
		return -1
	}
	return f
}
