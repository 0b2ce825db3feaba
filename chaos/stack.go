package chaos

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // the stack's MariaDB
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/opencoupon/coupon/client/branchcred"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Development callers (issue 8's local stack): the tokens our clients send
// and the coupon service's config names. Harmless while auth is off.
const (
	tokenAlice = "local-admin-alice"
	tokenBob   = "local-admin-bob"
	tokenApp   = "local-app"
	tokenShop  = "local-shop"
)

// shopBranchKey signs the shop's branch credentials (DTM branch headers);
// both services' configs name it.
var shopBranchKey = branchcred.Key{ID: "chaos-shop-1", Secret: "chaos-shop-branch-key-public-development-only"}

// Database names on the stack's own MariaDB.
const (
	dbMain    = "coupon_main"
	dbShard   = "coupon_shard_" // + shard number
	dbOrder   = "shop_order"
	dbPayment = "shop_payment"
	dbDTM     = "dtm"
	shards    = 2
	tables    = 4 // per shard
	keyPrefix = "chaos:"
)

// Stack is the system under test, all on loopback ports of its own: one
// MariaDB, one Redis and one nats-server (JetStream) process with data under
// the run directory, two coordinators sharing a MySQL store, the coupon
// service (events on) and the sample shop, with fault proxies between them.
// Close stops every process it started.
type Stack struct {
	Dir string
	log *slog.Logger

	bins      binaries
	couponEnv []string

	mariadb, redis   *process
	nats             *process
	coords           [2]*process
	coupon, shop     *process
	mysqlPort        int
	redisPort        int
	natsPort         int
	coordHTTP        [2]string
	coordGRPC        [2]string
	couponGRPC       string
	couponOps        string
	couponHTTP       string // the HTTP gateway, on only in connection-flood
	shopGRPC         string
	shopOps          string
	proxyAddr        map[string]string
	couponConfigFile string
	shopConfigFile   string

	faults *Faults

	db       *sql.DB // root on the stack's MariaDB, no default database
	rdb      *goredis.Client
	couponCC *grpc.ClientConn
	shopCC   *grpc.ClientConn
	admin    couponv1.AdminServiceClient
	coupons  couponv1.CouponServiceClient
	orders   shopv1.OrderServiceClient
	payments shopv1.PaymentServiceClient
}

type binaries struct{ coupon, coordinator, shop string }

// StackOptions says where the binaries come from and how the coupon
// service runs.
type StackOptions struct {
	// Dir is the run directory (data, configs, logs); a new temporary one
	// when empty. It is removed by Close unless Keep.
	Dir  string
	Keep bool
	// BinDir holds prebuilt coupon, coordinator and shop binaries (make
	// build's bin/); empty builds them into Dir with `go build`.
	BinDir string
	// CouponBin, if set, is the coupon binary to run (e.g. one built with a
	// mutation of tools/mutate put in), whatever BinDir says.
	CouponBin string
	// CouponEnv is added to the coupon service's environment.
	CouponEnv []string
	Log       *slog.Logger
}

// StartStack builds (or finds) the binaries and starts every process.
func StartStack(ctx context.Context, o StackOptions) (s *Stack, err error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "coupon-chaos-"); err != nil {
			return nil, fmt.Errorf("run directory: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	st := &Stack{Dir: dir, log: log, couponEnv: o.CouponEnv, faults: newFaults(), proxyAddr: map[string]string{}}
	s = st
	defer func() {
		if err != nil {
			st.Close()
			if !o.Keep {
				os.RemoveAll(dir)
			}
		}
	}()
	if s.bins, err = findBinaries(ctx, dir, o.BinDir); err != nil {
		return nil, err
	}
	if o.CouponBin != "" {
		if s.bins.coupon, err = filepath.Abs(o.CouponBin); err != nil {
			return nil, err
		}
	}
	steps := []struct {
		what string
		fn   func(context.Context) error
	}{
		{"mariadb", s.startMariaDB},
		{"redis", s.startRedis},
		{"nats-server", s.startNATS},
		{"proxies", s.startProxies},
		{"coordinators", s.startCoordinators},
		{"coupon service", s.startCoupon},
		{"shop", s.startShop},
		{"clients", s.dialClients},
	}
	for _, st := range steps {
		began := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := st.fn(sctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", st.what, err)
		}
		log.Info("started", "what", st.what, "took", time.Since(began).Round(time.Millisecond).String())
	}
	return s, nil
}

// findBinaries returns prebuilt binaries from binDir, or builds them.
func findBinaries(ctx context.Context, dir, binDir string) (binaries, error) {
	if binDir != "" {
		binDir, err := filepath.Abs(binDir)
		if err != nil {
			return binaries{}, err
		}
		b := binaries{filepath.Join(binDir, "coupon"), filepath.Join(binDir, "coordinator"), filepath.Join(binDir, "shop")}
		for _, p := range []string{b.coupon, b.coordinator, b.shop} {
			if _, err := os.Stat(p); err != nil {
				return b, fmt.Errorf("binary %s: %w (make build makes it)", p, err)
			}
		}
		return b, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return binaries{}, err
	}
	bin := filepath.Join(dir, "bin")
	b := binaries{filepath.Join(bin, "coupon"), filepath.Join(bin, "coordinator"), filepath.Join(bin, "shop")}
	for out, pkg := range map[string]string{b.coupon: "./cmd/coupon", b.coordinator: "./cmd/coordinator", b.shop: "./examples/shop/cmd/shop"} {
		if err := runCmd(ctx, root, nil, "go", "build", "-o", out, pkg); err != nil {
			return b, fmt.Errorf("build: %w", err)
		}
	}
	return b, nil
}

// moduleRoot is the directory of the coupon module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w (run inside the coupon module, or pass --bin)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the coupon module: pass --bin DIR with prebuilt binaries")
	}
	return filepath.Dir(gomod), nil
}

func (s *Stack) startMariaDB(ctx context.Context) error {
	install, err := lookPath("mariadb-install-db")
	if err != nil {
		return err
	}
	server, err := lookPath("mariadbd")
	if err != nil {
		return err
	}
	data := filepath.Join(s.Dir, "mariadb")
	// A temp dir of its own: instances sharing /tmp (tests in parallel,
	// another stack) have failed to bootstrap over each other's temp tables.
	tmp := filepath.Join(s.Dir, "mariadb-tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	user := []string{}
	if os.Geteuid() == 0 {
		user = []string{"--user=root"}
	}
	if _, err := os.Stat(filepath.Join(data, "mysql")); err != nil {
		args := append([]string{install, "--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db", "--tmpdir=" + tmp}, user...)
		if err := runCmd(ctx, s.Dir, nil, args...); err != nil {
			return err
		}
	}
	if s.mysqlPort, err = freePort(); err != nil {
		return err
	}
	args := append([]string{server, "--no-defaults", "--datadir=" + data, "--tmpdir=" + tmp,
		fmt.Sprintf("--port=%d", s.mysqlPort), "--bind-address=127.0.0.1",
		"--socket=" + filepath.Join(s.Dir, "mariadb.sock"), "--pid-file=" + filepath.Join(s.Dir, "mariadb.pid"),
		"--skip-log-bin", "--binlog-format=ROW", "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M",
		// The chaos kills clients, never MariaDB: durability is not under test.
		"--innodb-flush-log-at-trx-commit=2", "--skip-name-resolve", "--max-connections=300",
	}, user...)
	s.mariadb = newProcess("mariadb", s.Dir, nil, args...)
	if err := s.mariadb.start(ctx, dialReady(addr(s.mysqlPort))); err != nil {
		return err
	}
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(%s)/?parseTime=true&loc=UTC&multiStatements=true", addr(s.mysqlPort)))
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(8)
	s.db = db
	for {
		if err = db.PingContext(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mariadb: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Stack) startRedis(ctx context.Context) error {
	var err error
	if s.redisPort, err = freePort(); err != nil {
		return err
	}
	server, err := lookPath("redis-server")
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// No persistence: a restart is a total loss of data (redis-data-loss).
	s.redis = newProcess("redis", s.Dir, nil, server, "--port", fmt.Sprint(s.redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no")
	if err := s.redis.start(ctx, dialReady(addr(s.redisPort))); err != nil {
		return err
	}
	s.rdb = goredis.NewClient(&goredis.Options{Addr: addr(s.redisPort), MaxRetries: -1, PoolSize: 4})
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	// The coupon service stamps its request buckets born when it starts,
	// and counts a template created less than its clock-skew allowance
	// (10s) later as possibly older than them: every claim of a scenario
	// run on a young stack would then read MySQL for an earlier coupon
	// before taking stock, so no claim would reach its write under a shard
	// fault. A fresh Redis has lost no markers: the buckets are stamped
	// born a minute ago, as in a Redis that has been up a while. A
	// restarted, empty Redis (redis-data-loss) is reborn as the service
	// finds it.
	born := strconv.FormatInt(time.Now().Add(-time.Minute).UnixMilli(), 10)
	for b := range requestBuckets {
		if err := s.rdb.Set(ctx, fmt.Sprintf("%sreq:{%d}:born", keyPrefix, b), born, 0).Err(); err != nil {
			return err
		}
	}
	return nil
}

// requestBuckets is the coupon service's number of request-marker
// buckets (participant/redis/requests.go).
const requestBuckets = 64

// restartRedis kills Redis and starts it again, empty.
func (s *Stack) restartRedis(ctx context.Context) error {
	s.redis.kill()
	return s.redis.start(ctx, dialReady(addr(s.redisPort)))
}

func (s *Stack) startProxies(ctx context.Context) error {
	var err error
	for i := range shards {
		name := fmt.Sprintf("%s%d", proxyShardPrefix, i)
		if s.proxyAddr[name], err = s.faults.add(name, addr(s.mysqlPort)); err != nil {
			return err
		}
	}
	if s.proxyAddr[proxyRedis], err = s.faults.add(proxyRedis, addr(s.redisPort)); err != nil {
		return err
	}
	if s.proxyAddr[proxyNATS], err = s.faults.add(proxyNATS, addr(s.natsPort)); err != nil {
		return err
	}
	// The coupon service's and coordinator A's ports are fixed now so that
	// the proxies towards them can start before they do.
	for i := range 2 {
		h, err1 := freePort()
		g, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		s.coordHTTP[i], s.coordGRPC[i] = addr(h), addr(g)
	}
	cg, err1 := freePort()
	co, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	s.couponGRPC, s.couponOps = addr(cg), addr(co)
	if s.proxyAddr[proxyDTMCoupon], err = s.faults.add(proxyDTMCoupon, s.couponGRPC); err != nil {
		return err
	}
	s.proxyAddr[proxyClientDTM], err = s.faults.add(proxyClientDTM, s.coordGRPC[0])
	return err
}

func (s *Stack) startCoordinators(ctx context.Context) error {
	for i := range 2 {
		file := filepath.Join(s.Dir, fmt.Sprintf("coordinator-%d.yaml", i))
		cfg := fmt.Sprintf(`# written by couponlab chaos: coordinator %d of 2, sharing one MySQL store
http:
  addr: %s
grpc:
  addr: %s
log:
  level: warn
store:
  driver: mysql
  host: 127.0.0.1
  port: %d
  user: root
  password: ""
  db: %s
  max_open_conns: 8
  max_idle_conns: 8
  conn_max_lifetime: 5m
# Short, so that faults heal within a scenario: the first retry after 3s,
# then doubling; branch calls bounded at 2s.
retry_interval: 3s
timeout_to_fail: 8s
request_timeout: 2s
cron:
  interval: 200ms
  workers: 2
transient_retries: 3
shutdown:
  timeout: 5s
`, i, s.coordHTTP[i], s.coordGRPC[i], s.mysqlPort, dbDTM)
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			return err
		}
		if i == 0 {
			if err := runCmd(ctx, s.Dir, nil, s.bins.coordinator, "migrate", "--config", file); err != nil {
				return err
			}
		}
		s.coords[i] = newProcess(fmt.Sprintf("coordinator-%d", i), s.Dir, []string{"LOG_LEVEL=WARN"}, s.bins.coordinator, "serve", "--config", file)
		if err := s.coords[i].start(ctx, httpReady("http://"+s.coordHTTP[i]+"/api/ping")); err != nil {
			return err
		}
	}
	return nil
}

// startCoordinator restarts coordinator i on its ports.
func (s *Stack) startCoordinator(ctx context.Context, i int) error {
	return s.coords[i].start(ctx, httpReady("http://"+s.coordHTTP[i]+"/api/ping"))
}

func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func (s *Stack) startCoupon(ctx context.Context) error {
	var dsns strings.Builder
	for i := range shards {
		fmt.Fprintf(&dsns, "    - root@tcp(%s)/%s%d\n", s.proxyAddr[fmt.Sprintf("%s%d", proxyShardPrefix, i)], dbShard, i)
	}
	cfg := fmt.Sprintf(`# written by couponlab chaos: the coupon service under test. Shard and Redis
# connections go through fault proxies; the main database does not.
grpc:
  addr: %s
ops:
  addr: %s
# No HTTP gateway: chaos drives gRPC, and the default :9092 may be taken
# by a local stack (make up) on the same machine.
http:
  addr: ""
node_id: 7
log:
  level: info
default_deadline: 5s
mysql:
  main_dsn: root@tcp(127.0.0.1:%d)/%s
  shard_dsns:
%s  tables_per_shard: %d
  max_open_conns: 8
  max_idle_conns: 8
redis:
  addrs: [%s]
  key_prefix: "%s"
  pool_size: 32
claim:
  write_timeout: 1s
stock:
  # Longer than claim.write_timeout, as the service requires; short so a
  # rebuild pauses claims briefly.
  settle: 2s
  audit_interval: 1s
  max_sub_keys: 8
expiry:
  sweep_interval: 5s
cache:
  template_refresh: 200ms
risk:
  max_daily_uses: 20
# Lifecycle events (docs/events.md) through the coupon-nats proxy to the
# stack's nats-server. A short lease: a SIGKILLed service's outboxes are
# relayed again by its successor within 2s.
events:
  url: nats://%s
  lease_ttl: 2s
# Asked whether a Saga is aborting before its compensation is served on a
# branch credential (and by the barrier janitor); both coordinators share
# one store.
dtm:
  http_addr: %s
auth:
  enabled: true
  callers:
    - identity: alice
      roles: [admin]
      token_sha256: %s
    - identity: bob
      roles: [admin]
      token_sha256: %s
    - identity: app
      roles: [app]
      token_sha256: %s
    - identity: shop
      roles: [order]
      token_sha256: %s
      branch_keys:
        - id: %s
          secret: %s
`, s.couponGRPC, s.couponOps, s.mysqlPort, dbMain, dsns.String(), tables, s.proxyAddr[proxyRedis], keyPrefix,
		s.proxyAddr[proxyNATS], s.coordHTTP[0], tokenHash(tokenAlice), tokenHash(tokenBob), tokenHash(tokenApp), tokenHash(tokenShop), shopBranchKey.ID, shopBranchKey.Secret)
	s.couponConfigFile = filepath.Join(s.Dir, "coupon.yaml")
	if err := os.WriteFile(s.couponConfigFile, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := runCmd(ctx, s.Dir, s.couponEnv, s.bins.coupon, "migrate", "--config", s.couponConfigFile); err != nil {
		return err
	}
	s.coupon = newProcess("coupon", s.Dir, s.couponEnv, s.bins.coupon, "serve", "--config", s.couponConfigFile)
	return s.restartCoupon(ctx)
}

// restartCoupon starts the coupon service (again) and waits until it is ready.
func (s *Stack) restartCoupon(ctx context.Context) error {
	return s.coupon.start(ctx, httpReady("http://"+s.couponOps+"/readyz"))
}

func (s *Stack) startShop(ctx context.Context) error {
	g, err1 := freePort()
	o, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	s.shopGRPC, s.shopOps = addr(g), addr(o)
	dsn := func(db string) string {
		return fmt.Sprintf("root@tcp(127.0.0.1:%d)/%s?parseTime=true&loc=UTC&interpolateParams=true", s.mysqlPort, db)
	}
	cfg := fmt.Sprintf(`# written by couponlab chaos: the sample shop (order + payment services)
log:
  level: info
grpc:
  addr: %s
  advertise: %s
ops:
  addr: %s
dtm:
  grpc: %s
coupon:
  target: %s
  # Sent as authorization: Bearer on its own calls and Trys only.
  token: %s
  identity: shop
  # Signs the gid-bound branch credential in DTM branch headers.
  branch_keys:
    - id: %s
      secret: %s
payment:
  target: %s
  dsn: %s
order:
  dsn: %s
  timeout: 3s
  sweep_interval: 1s
db:
  max_conns: 8
shutdown:
  timeout: 5s
`, s.shopGRPC, s.shopGRPC, s.shopOps, s.coordGRPC[0], s.couponGRPC, tokenShop, shopBranchKey.ID, shopBranchKey.Secret, s.shopGRPC, dsn(dbPayment), dsn(dbOrder))
	s.shopConfigFile = filepath.Join(s.Dir, "shop.yaml")
	if err := os.WriteFile(s.shopConfigFile, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := runCmd(ctx, s.Dir, nil, s.bins.shop, "migrate", "--config", s.shopConfigFile); err != nil {
		return err
	}
	s.shop = newProcess("shop", s.Dir, []string{"LOG_LEVEL=WARN"}, s.bins.shop, "serve", "--config", s.shopConfigFile)
	return s.shop.start(ctx, httpReady("http://"+s.shopOps+"/healthz"))
}

func (s *Stack) dialClients(ctx context.Context) error {
	var err error
	if s.couponCC, err = grpc.NewClient(s.couponGRPC, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	if s.shopCC, err = grpc.NewClient(s.shopGRPC, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	s.admin, s.coupons = couponv1.NewAdminServiceClient(s.couponCC), couponv1.NewCouponServiceClient(s.couponCC)
	s.orders, s.payments = shopv1.NewOrderServiceClient(s.shopCC), shopv1.NewPaymentServiceClient(s.shopCC)
	return nil
}

// Close stops every process, children first, and the proxies.
func (s *Stack) Close() {
	for _, c := range []*grpc.ClientConn{s.couponCC, s.shopCC} {
		if c != nil {
			c.Close()
		}
	}
	for _, p := range []*process{s.shop, s.coupon, s.coords[0], s.coords[1]} {
		if p != nil {
			p.stop(5 * time.Second)
		}
	}
	s.faults.close()
	if s.rdb != nil {
		s.rdb.Close()
	}
	if s.db != nil {
		s.db.Close()
	}
	for _, p := range []*process{s.nats, s.redis, s.mariadb} {
		if p != nil {
			p.stop(10 * time.Second)
		}
	}
}

// shardDB opens a query on shard i's database name.
func shardName(i int) string { return fmt.Sprintf("%s%d", dbShard, i) }
