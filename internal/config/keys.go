package config

import (
	"time"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/console"
	"github.com/opencoupon/coupon/internal/janitor"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/internal/webhook"
	"github.com/opencoupon/coupon/participant"
)

// keys is every key the coupon command reads, bound to c's fields, in the
// order of the reference. The defaults are the owning packages' own
// (participant.DefaultConfig, app.Default…) where they have one; the
// literals here are the defaults nothing else names.
func keys(c *Config) []Key {
	a, r := &c.App, &c.Reconcile
	d := participant.DefaultConfig()
	return []Key{
		// grpc
		{"grpc.addr", "127.0.0.1:9090", to(&a.GRPCAddr), "gRPC API listener"},
		{"grpc.tls.cert_file", "", to(&a.TLS.CertFile), "TLS certificate of the gRPC listener (with `grpc.tls.key_file`: both or neither); rotation takes a restart"},
		{"grpc.tls.key_file", "", to(&a.TLS.KeyFile), "TLS key of the gRPC listener (with `grpc.tls.cert_file`: both or neither)"},
		{"grpc.tls.client_ca_file", "", to(&a.TLS.ClientCAFile), "CA of client certificates: callers may authenticate by certificate subject (mTLS)"},
		{"grpc.tls.require_client_cert", false, to(&a.TLS.RequireClientCert), "refuse handshakes without a client certificate (then tokens alone no longer get in)"},
		{"grpc.max_recv_bytes", app.DefaultMaxRecvBytes, to(&a.Limits.MaxRecvBytes), "largest request message"},
		{"grpc.max_send_bytes", app.DefaultMaxSendBytes, to(&a.Limits.MaxSendBytes), "largest response message"},
		{"grpc.max_header_bytes", app.DefaultMaxHeaderBytes, to(&a.Limits.MaxHeaderBytes), "largest request metadata"},
		{"grpc.max_concurrent_streams", 0, to(&a.Limits.MaxConcurrentStreams), "calls in flight per client connection; 0: gRPC's default"},
		{"grpc.max_connections", app.DefaultGRPCMaxConns, offIfZero(&a.Conns.GRPC), "gRPC connections open at once; past it a new connection is closed on accept (0: no cap)"},
		{"grpc.handshake_timeout", app.DefaultHandshakeTimeout, to(&a.Keepalive.HandshakeTimeout), "a gRPC connection that has not finished its TLS handshake and HTTP/2 preface and settings by then is closed"},
		{"grpc.keepalive.max_idle", app.DefaultGRPCMaxIdle, to(&a.Keepalive.MaxIdle), "a gRPC connection with no call for this long is closed (GOAWAY; clients reconnect on their next call)"},
		{"grpc.keepalive.time", app.DefaultKeepaliveTime, to(&a.Keepalive.Time), "after this long without traffic the server pings the client"},
		{"grpc.keepalive.timeout", app.DefaultKeepaliveTimeout, to(&a.Keepalive.Timeout), "no answer to the server's ping within this closes the connection"},
		{"grpc.keepalive.min_time", app.DefaultKeepaliveMinTime, to(&a.Keepalive.MinTime), "clients pinging more often than this are disconnected"},

		// ops
		{"ops.addr", "127.0.0.1:9091", to(&a.OpsAddr), "ops HTTP: `/healthz` (process up), `/readyz` (main DB, every shard and Redis reachable), `/metrics` (no pprof: see `pprof.addr`)"},
		{"ops.max_connections", app.DefaultOpsMaxConns, offIfZero(&a.Conns.Ops), "ops connections open at once; past it a new connection is closed on accept (0: no cap)"},
		{"ops.read_timeout", app.DefaultOpsReadTimeout, to(&a.Ops.ReadTimeout), "ops listener: reading a request"},
		{"ops.write_timeout", app.DefaultOpsWriteTimeout, to(&a.Ops.WriteTimeout), "ops listener: writing a response"},
		{"ops.idle_timeout", app.DefaultOpsIdleTimeout, to(&a.Ops.IdleTimeout), "ops listener: a kept-alive connection with no request"},

		// http
		{"http.addr", "127.0.0.1:9092", to(&a.HTTP.Addr), "HTTP/JSON API (`/v1/…`), `/openapi.json` and the console (`/console`); empty turns it off"},
		{"http.tls.cert_file", "", to(&a.HTTP.TLS.CertFile), "TLS certificate of the HTTP listener (API and console; with `http.tls.key_file`: both or neither; TLS 1.2+, no plain-text fallback); rotation takes a restart"},
		{"http.tls.key_file", "", to(&a.HTTP.TLS.KeyFile), "TLS key of the HTTP listener (with `http.tls.cert_file`: both or neither)"},
		{"http.trusted_proxies", []string{}, to(&a.HTTP.Console.TrustedProxies), "reverse proxies in front of the listener: IP addresses or CIDR ranges (`10.0.0.7`, `10.0.0.0/8`); only from them do `X-Forwarded-For` and `X-Forwarded-Proto` count"},
		{"http.max_connections", app.DefaultHTTPMaxConns, offIfZero(&a.Conns.HTTP), "HTTP connections open at once; past it a new connection is closed on accept (0: no cap)"},

		// console
		{"console.dtm_http_addr", "127.0.0.1:36789", to(&a.HTTP.Console.DTMHTTPAddr), "the coordinator's HTTP API, for the status of a LOCKED coupon's transaction"},
		{"console.secure_cookies", false, to(&a.HTTP.Console.SecureCookies), "mark the console's cookies `Secure` on every response, not only when the browser's connection is HTTPS"},
		{"console.signin_failures", console.DefaultSigninFailures, offIfZero(&a.HTTP.Console.SigninFailures), "failed console sign-ins from one client address within `console.signin_window` before it must wait out the window (429, `Retry-After`); 0: no throttle"},
		{"console.signin_window", console.DefaultSigninWindow, to(&a.HTTP.Console.SigninWindow), "the window of `console.signin_failures`"},

		// pprof
		{"pprof.addr", "", to(&a.Pprof.Addr), "`net/http/pprof` on a listener of its own; give a loopback address (`127.0.0.1:6060`); empty: off"},
		{"pprof.hosts", app.DefaultPprofHosts(), to(&a.Pprof.Hosts), "the only `Host` names pprof answers (any port); others get 403, so a page in a browser cannot reach it by DNS rebinding"},
		{"pprof.write_timeout", app.DefaultPprofWriteTimeout, to(&a.Pprof.WriteTimeout), "bounds a pprof response; `?seconds=` above it (profile, trace, delta profiles) is refused with 400"},

		// node_id, log
		{"node_id", 1, to(&a.NodeID), "ID generator node, 0..1023; **unique per replica**"},
		{"log.level", "info", to(&c.LogLevel), "slog JSON to stderr: debug, info, warn or error"},

		// auth
		{"auth.enabled", true, to(&a.Auth.Enabled), "authentication and authorization; off, anyone reaching the port may call everything (logged at start)"},
		{"auth.callers", []any{}, objects(&a.Auth.Callers), "the callers: `identity`, `roles`, `token_sha256` and/or `subject`, and for an order service `branch_keys` (`id`, `secret` ≥ 32 bytes) verifying its branch credentials"},
		{"auth.failure_rps", auth.DefaultFailureRPS, offIfZero(&a.Auth.FailureRPS), "failed authentications per client address: past `auth.failure_burst` its calls are refused `RATE_LIMITED` before their credential is checked, one more try per 1/rps seconds; 0: no limit"},
		{"auth.failure_burst", auth.DefaultFailureBurst, to(&a.Auth.FailureBurst), "failed authentications a client address may make before `auth.failure_rps` applies"},

		// ratelimit
		{"ratelimit.per_caller_rps", 0, to(&a.RateLimit.PerCaller), "token bucket per identity **and method** for callers no entry of `ratelimit.limits` matches; branch methods excepted; 0: off"},
		{"ratelimit.burst", 1000, to(&a.RateLimit.Burst), "burst of `ratelimit.per_caller_rps`"},
		{"ratelimit.branch_rps", app.DefaultBranchRPS, offIfZero(&a.RateLimit.Branch), "the same for the branch methods (Lock/Consume/Unlock/UseCoupon/UseCouponRevert/ReturnCoupon), which may write barrier rows; 0: unlimited (the local stack)"},
		{"ratelimit.branch_burst", app.DefaultBranchBurst, to(&a.RateLimit.BranchBurst), "burst of `ratelimit.branch_rps`"},
		{"ratelimit.limits", []any{}, objects(&a.RateLimit.Limits), "entries `{identity or role, methods (optional), rps, burst}`; `rps: 0` = unlimited"},

		// deadline
		{"deadline.user", app.DefaultUserDeadline, offIfZero(&a.Deadlines.User), "server-side deadline of user-side CouponService calls; 0: no bound"},
		{"deadline.branch", app.DefaultBranchDeadline, offIfZero(&a.Deadlines.Branch), "server-side deadline of the branch methods (Lock/Consume/Unlock/UseCoupon/UseCouponRevert/ReturnCoupon); 0: no bound"},
		{"deadline.admin", app.DefaultAdminDeadline, offIfZero(&a.Deadlines.Admin), "server-side deadline of AdminService; 0: no bound"},
		{"deadline.methods", map[string]any{}, durations(&a.Deadlines.Methods), "per-method overrides, e.g. `CouponService/ListUserCoupons: 1s`; `0s` = no bound"},

		// concurrency
		{"concurrency.max_per_method", app.DefaultMaxConcurrent, offIfZero(&a.Limits.MaxConcurrent), "calls of one method in flight per replica; over it: `Unavailable`/`UNAVAILABLE` at once; 0: no limit"},
		{"concurrency.methods", map[string]any{}, ints(&a.Limits.Methods), "per-method overrides of `concurrency.max_per_method`"},

		// shutdown, readiness
		{"shutdown.delay", time.Duration(0), to(&a.Shutdown.Delay), "health reports NOT_SERVING this long before the listener stops accepting (give load balancers time; 2–5 s behind one)"},
		{"shutdown.timeout", app.DefaultShutdownTimeout, to(&a.Shutdown.Timeout), "drain of calls in flight; then they are cancelled"},
		{"readiness.interval", app.DefaultReadinessInterval, to(&a.ReadinessInterval), "how often gRPC health re-checks the main DB, every shard and Redis"},

		// tracing
		{"tracing.otlp.endpoint", "", to(&a.Tracing.OTLPEndpoint), "OTLP/gRPC collector `host:port`; spans are made (ids in logs) but exported only when set; empty: off"},
		{"tracing.otlp.insecure", false, to(&a.Tracing.Insecure), "send to the collector without TLS"},
		{"tracing.sample_ratio", 1.0, to(&a.Tracing.SampleRatio), "share of new traces exported (calls arriving sampled stay sampled)"},
		{"tracing.service_name", "coupon", to(&a.Tracing.ServiceName), "the spans' `service.name`"},

		// metrics
		{"metrics.stock_refresh", app.DefaultStockMetricsRefresh, to(&a.StockMetricsRefresh), "how often remaining stock is read from Redis for `/metrics`"},
		{"metrics.stuck_locked_after", app.DefaultStuckLockedAfter, to(&a.StuckLockedAfter), "age past which a LOCKED coupon counts as stuck"},

		// mysql
		{"mysql.main_dsn", "root@tcp(127.0.0.1:3306)/coupon_main", to(&a.MySQL.MainDSN), "campaigns, templates, stock ops"},
		{"mysql.shard_dsns", []string{"root@tcp(127.0.0.1:3306)/coupon_shard_0", "root@tcp(127.0.0.1:3306)/coupon_shard_1"}, to(&a.MySQL.ShardDSNs), "shard databases, in order"},
		{"mysql.tables_per_shard", 8, to(&a.MySQL.TablesPerShard), "coupon tables per shard database (table t lives in shard t / this)"},
		{"mysql.slots", 0, to(&a.MySQL.Slots), "logical slots users and phones hash to; used by the first migrate, fixed after it; 0: 1024"},
		{"mysql.slot_map", []string{}, slotMap(&a.MySQL.SlotMap), "explicit slot assignment, `LO-HI:TABLE` entries covering every slot; empty keeps the stored one"},
		{"mysql.max_open_conns", 16, to(&a.MySQL.MaxOpenConns), "open connections per database"},
		{"mysql.max_idle_conns", 16, to(&a.MySQL.MaxIdleConns), "idle connections kept per database"},

		// redis
		{"redis.addrs", []string{"127.0.0.1:6379"}, to(&a.Redis.Addrs), "one address: single Redis; several (or `redis.cluster: true`): Redis Cluster"},
		{"redis.cluster", false, to(&a.Redis.Cluster), "Redis Cluster even with one seed address"},
		{"redis.password", "", to(&a.Redis.Password), "Redis password"},
		{"redis.db", 0, to(&a.Redis.DB), "Redis database number (single Redis)"},
		{"redis.key_prefix", "coupon:", to(&a.Redis.Prefix), "every key the service writes starts with it"},
		{"redis.pool_size", 128, to(&a.Redis.PoolSize), "Redis connection pool size"},
		{"redis.dial_timeout", app.DefaultRedisDialTimeout, to(&a.Redis.DialTimeout), "connecting to Redis; a call's deadline bounds its Redis commands too"},
		{"redis.read_timeout", app.DefaultRedisReadTimeout, to(&a.Redis.ReadTimeout), "reading a Redis reply; a call's deadline bounds its Redis commands too"},
		{"redis.write_timeout", app.DefaultRedisWriteTimeout, to(&a.Redis.WriteTimeout), "writing a Redis command; a call's deadline bounds its Redis commands too"},

		// claim, stock, expiry, cache, risk: participant.Config
		{"claim.write_timeout", d.ClaimWriteTimeout, to(&a.Service.ClaimWriteTimeout), "bound from taking stock to committing the coupon"},
		{"claim.request_ttl", d.RequestDoneTTL, to(&a.Service.RequestDoneTTL), "how long a claim's request ID stays marked in Redis (past it, and after Redis lost its data, the shard's unique key answers retries)"},
		{"claim.inflight_ttl", d.RequestInFlightTTL, to(&a.Service.RequestInFlightTTL), "a marked request ID whose call died is taken over by a retry after this (the taker looks for the call's coupon first)"},
		{"claim.soldout_recheck", d.SoldOutRecheck, to(&a.Service.SoldOutRecheck), "a template found sold out is refused from memory this long (a top-up on this replica ends it at once)"},
		{"stock.settle", d.StockSettle, to(&a.Service.StockSettle), "how long a counter rebuild drains claims in flight; must exceed `claim.write_timeout`"},
		{"stock.max_sub_keys", d.MaxSubStock, to(&a.Service.MaxSubStock), "cap on a template's stock sub-keys"},
		{"stock.audit_interval", d.AuditInterval, to(&a.Service.AuditInterval), "stock audit period; negative: not on this replica"},
		{"expiry.sweep_interval", d.SweepInterval, to(&a.Service.SweepInterval), "expiry sweeper period; negative: not on this replica"},
		{"expiry.batch", d.SweepBatch, to(&a.Service.SweepBatch), "coupons one expiry sweep statement expires at most"},
		{"cache.template_refresh", d.TemplateRefresh, to(&a.Service.TemplateRefresh), "template cache: how stale a replica's in-memory template may be (admin changes reach every replica within about this long)"},
		{"cache.template_redis_ttl", d.TemplateRedisTTL, to(&a.Service.TemplateRedisTTL), "template cache: how long a template stays in Redis (bounds staleness when invalidating Redis failed)"},
		{"risk.max_daily_uses", d.MaxDailyUses, to(&a.Service.MaxDailyUses), "coupons one user may use per UTC day (negative: off)"},

		// barrier
		{"events.url", "", to(&a.Events.URL), "NATS with JetStream (`nats://127.0.0.1:4222`): every change writes its lifecycle events to the outbox in its own transaction and a relay publishes them (docs/events.md); empty: events off, nothing written"},
		{"events.stream", relay.DefaultStream, to(&a.Events.Stream), "the JetStream stream, created or updated at start with subjects `events.subject_prefix` + `>`"},
		{"events.subject_prefix", relay.DefaultSubjectPrefix, to(&a.Events.SubjectPrefix), "an event's subject is this and its type (`coupon.events.coupon.claimed`); webhooks need the default"},
		{"events.batch", 1000, to(&a.Events.Batch), "events the relay reads and publishes at once (in whole outbox rows: a row holds one transaction's events)"},
		{"events.poll", 50 * time.Millisecond, to(&a.Events.Poll), "how often the relay looks at an idle outbox (the floor of an event's latency)"},
		{"events.duplicate_window", 2 * time.Minute, to(&a.Events.DuplicateWindow), "the stream's duplicate window: a resend of an event within it is dropped by JetStream (it holds every event ID of the window in nats-server's memory: 2m at 5,000 events/s is 600,000 IDs)"},
		{"events.max_age", 7 * 24 * time.Hour, to(&a.Events.MaxAge), "how long the stream keeps events"},
		{"events.lease_ttl", 10 * time.Second, to(&a.Events.LeaseTTL), "each outbox is relayed by one replica under a Redis lease; a dead holder's outboxes move within this"},
		{"events.ack_timeout", 5 * time.Second, to(&a.Events.AckTimeout), "the relay's wait for JetStream's acknowledgements before it retries"},

		// webhooks
		{"webhooks.enabled", true, to(&a.Webhooks.Enabled), "with `events.url` set, deliver the events to the HTTPS endpoints admins register (docs/webhooks.md); off, or with events off, the webhook calls answer `WEBHOOKS_OFF`"},
		{"webhooks.allow_http", false, to(&a.Webhooks.AllowHTTP), "accept plain `http` endpoint URLs to any host (development, private networks); `http` to a loopback host is always accepted"},
		{"webhooks.timeout", webhook.DefaultTimeout, to(&a.Webhooks.Timeout), "bounds one delivery attempt, from dialing to the response status"},
		{"webhooks.horizon", webhook.DefaultHorizon, to(&a.Webhooks.Horizon), "an event is retried this long from its first attempt at an endpoint, then given up"},
		{"webhooks.disable_after", webhook.DefaultDisableAfter, to(&a.Webhooks.DisableAfter), "consecutive failed attempts that disable an endpoint (alert `CouponWebhookEndpointDisabled`); so does every attempt failing for 24h"},
		{"webhooks.max_backoff", webhook.DefaultMaxBackoff, to(&a.Webhooks.MaxBackoff), "the longest wait between attempts at an event (from 1s, doubling)"},
		{"webhooks.refresh", webhook.DefaultRefreshInterval, to(&a.Webhooks.Refresh), "how often each replica reads the endpoint table again; a change made through a replica applies on it at once"},
		{"webhooks.retention", webhook.DefaultRetention, to(&a.Webhooks.Retention), "delivery attempts older than this are deleted (hourly, one replica at a time under a Redis lease); must exceed `webhooks.horizon`, whose retries read them"},
		{"barrier.interval", 10 * time.Minute, to(&a.Barrier.Interval), "barrier janitor period (one replica at a time, under a Redis lease); 0 turns it off"},
		{"barrier.retention", janitor.DefaultRetention, to(&a.Barrier.Retention), "barrier rows of finished transactions older than this are deleted"},
		{"barrier.max_age", janitor.DefaultMaxAge, to(&a.Barrier.MaxAge), "barrier rows older than this are deleted unless the coordinator reports their transaction unfinished (those stay, counted in `coupon_barrier_rows_kept_unfinished`, alert `CouponBarrierRowsOfUnfinishedTransactions`)"},
		{"barrier.batch", janitor.DefaultBatch, to(&a.Barrier.Batch), "barrier rows per delete"},
		{"barrier.unknown_finished", false, to(&a.Barrier.UnknownFinished), "treat gids the coordinator does not know as finished (a redis-store coordinator forgets them)"},

		// dtm
		{"dtm.http_addr", "127.0.0.1:36789", both(to(&a.Auth.Coordinator), to(&a.Barrier.Coordinator)), "the coordinator's HTTP API, asked by the janitor whether a transaction finished, and whether a Saga is aborting before a compensation on a branch credential is served"},

		// reconcile
		{"reconcile.source", "mysql", to(&r.Source), "`mysql`, or `csv`, which requires the three files (`--orders`, `--payments`, `--coupons`)"},
		{"reconcile.orders_dsn", "root@tcp(127.0.0.1:3306)/shop_order", to(&r.OrdersDSN), "the shop's orders database"},
		{"reconcile.payments_dsn", "root@tcp(127.0.0.1:3306)/shop_payment", to(&r.PaymentsDSN), "the shop's payments database"},
		{"reconcile.state_dsn", "", to(&r.StateDSN), "state database; empty: `mysql.main_dsn`; `none` for none"},
		{"reconcile.zone", "UTC", to(&r.Zone), "the day's time zone"},
		{"reconcile.grace", 10 * time.Minute, to(&r.Grace), "in-flight window before as-of; must exceed `reconcile.dtm_timeout_to_fail` plus `reconcile.dtm_retry_budget`"},
		{"reconcile.pending_days", 3, to(&r.PendingDays), "pending longer than this many days is judged"},
		{"reconcile.out_dir", "reconcile-reports", to(&r.OutDir), "where runs without `--out` (and the scheduler) write DATE/"},
		{"reconcile.spill_dir", "", to(&r.SpillDir), "partition files; empty: the system's temporary directory"},
		{"reconcile.memory_limit", "200MiB", size(&r.MemoryLimit), "Go soft memory limit of the command"},
		{"reconcile.dtm_http", "127.0.0.1:36789", to(&r.DTMHTTP), "the coordinator's query API"},
		{"reconcile.dtm_grpc", "127.0.0.1:36790", to(&r.DTMGRPC), "the coordinator's address sent as dtm-dtm"},
		{"reconcile.dtm_timeout_to_fail", 35 * time.Second, to(&r.DTMTimeoutToFail), "DTM's TimeoutToFail (see `reconcile.grace`)"},
		{"reconcile.dtm_retry_budget", 5 * time.Minute, to(&r.DTMRetryBudget), "DTM's retry budget (see `reconcile.grace`)"},
		{"reconcile.coupon_addr", sameAs("grpc.addr"), to(&r.CouponAddr), "the coupon service that repairs call"},
		{"reconcile.coupon_token", "", to(&r.CouponToken), "bearer token of repair calls to the coupon service"},
		{"reconcile.schedule", "30 0 * * *", to(&r.Schedule), "the daemon (`coupon reconcile schedule`): when each day's run starts (cron, in `reconcile.zone`)"},
		{"reconcile.schedule_repair", "dry-run", to(&r.ScheduleRepair), "the daemon's repairs: `off`, `dry-run` or `apply`"},
		{"reconcile.lease", 10 * time.Minute, to(&r.Lease), "the daemon's lease: one replica runs each day"},
	}
}
