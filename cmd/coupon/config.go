package main

import (
	"fmt"
	"strings"

	"github.com/spf13/viper"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/gateway"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
)

// loadConfig reads the optional YAML file and COUPON_* environment
// overrides (key grpc.addr ← COUPON_GRPC_ADDR). Lists in the environment
// are comma-separated.
func loadConfig(file string) (app.Config, string, error) {
	d := participant.DefaultConfig()
	defaults := map[string]any{
		"grpc.addr":                "127.0.0.1:9090",
		"ops.addr":                 "127.0.0.1:9091",
		"http.addr":                "127.0.0.1:9092",
		"console.dtm_http_addr":    "127.0.0.1:36789",
		"node_id":                  1,
		"ratelimit.per_caller_rps": 0,
		"ratelimit.burst":          1000,
		"default_deadline":         "5s",
		"log.level":                "info",
		"mysql.main_dsn":           "root@tcp(127.0.0.1:3306)/coupon_main",
		"mysql.shard_dsns":         []string{"root@tcp(127.0.0.1:3306)/coupon_shard_0", "root@tcp(127.0.0.1:3306)/coupon_shard_1"},
		"mysql.tables_per_shard":   8,
		"mysql.slots":              0,
		"mysql.slot_map":           []string{},
		"mysql.max_open_conns":     16,
		"mysql.max_idle_conns":     16,
		"redis.addrs":              []string{"127.0.0.1:6379"},
		"redis.cluster":            false,
		"redis.password":           "",
		"redis.db":                 0,
		"redis.key_prefix":         "coupon:",
		"redis.pool_size":          128,
		"claim.write_timeout":      d.ClaimWriteTimeout.String(),
		"claim.inflight_ttl":       d.RequestInFlightTTL.String(),
		"claim.request_ttl":        d.RequestDoneTTL.String(),
		"stock.settle":             d.StockSettle.String(),
		"stock.max_sub_keys":       d.MaxSubStock,
		"stock.audit_interval":     d.AuditInterval.String(),
		"expiry.sweep_interval":    d.SweepInterval.String(),
		"expiry.batch":             d.SweepBatch,
		"cache.template_refresh":   d.TemplateRefresh.String(),
		"cache.template_redis_ttl": d.TemplateRedisTTL.String(),
		"risk.max_daily_uses":      d.MaxDailyUses,
	}
	v, err := readViper(file, defaults)
	if err != nil {
		return app.Config{}, "", err
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
	cfg := app.Config{
		GRPCAddr:        v.GetString("grpc.addr"),
		OpsAddr:         v.GetString("ops.addr"),
		NodeID:          v.GetInt64("node_id"),
		DefaultDeadline: v.GetDuration("default_deadline"),
		RateLimit:       app.RateLimit{PerCaller: v.GetFloat64("ratelimit.per_caller_rps"), Burst: v.GetInt("ratelimit.burst")},
		HTTP:            gateway.Config{Addr: v.GetString("http.addr"), Console: console.Config{DTMHTTPAddr: v.GetString("console.dtm_http_addr")}},
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
		},
		Service: participant.Config{
			ClaimWriteTimeout:  v.GetDuration("claim.write_timeout"),
			RequestInFlightTTL: v.GetDuration("claim.inflight_ttl"),
			RequestDoneTTL:     v.GetDuration("claim.request_ttl"),
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
	return cfg, v.GetString("log.level"), nil
}

// readViper reads the optional YAML file over defaults, with COUPON_*
// environment overrides (key grpc.addr ← COUPON_GRPC_ADDR).
func readViper(file string, defaults map[string]any) (*viper.Viper, error) {
	v := viper.New()
	for k, val := range defaults {
		v.SetDefault(k, val)
	}
	v.SetEnvPrefix("COUPON")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("read config %s: %w", file, err)
		}
	}
	return v, nil
}
