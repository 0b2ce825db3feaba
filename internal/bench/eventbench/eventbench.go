// Package eventbench measures what lifecycle events cost and how fast they
// travel, in one run on one machine: claims per second with events on
// against events off (two coupon services in this process, the same
// databases' shape, rounds alternating); the relay's throughput draining a
// backlog to NATS JetStream; and the latency from a claim to a subscriber
// at a steady event rate.
//
// Claims are made through the service's domain API (participant.Service,
// no gRPC), so the on/off ratio is the stricter one: gRPC's cost, the same
// with and without events, would only bring it closer to 1. The bench
// starts its own nats-server (Debian's) on a free loopback port with its
// store in a temporary directory, and its own databases and Redis prefix,
// removed at the end. `couponlab bench events` runs it.
package eventbench

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/bench/proccpu"
	"github.com/opencoupon/coupon/internal/bench/rediskeys"
	"github.com/opencoupon/coupon/internal/freeport"
	"github.com/opencoupon/coupon/internal/relay"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

type options struct {
	mysql, redis, prefix string
	duration             time.Duration
	rounds, callers      int
	backlog              int
	rate                 int
	latencyFor           time.Duration
	cpuProfile           string
	poll                 time.Duration
	grpc                 bool
	keepRows             bool
}

func parse(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("couponlab bench events", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.mysql, "mysql", "root@tcp(127.0.0.1:3306)/", "MariaDB server (the bench creates and drops its own databases)")
	fs.StringVar(&o.redis, "redis", "127.0.0.1:6379", "Redis address")
	fs.StringVar(&o.prefix, "prefix", "evbench", "prefix of the bench's databases and Redis keys")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each claim round")
	fs.IntVar(&o.rounds, "rounds", 5, "claim rounds with events on and with events off, alternating")
	fs.IntVar(&o.callers, "callers", 64, "concurrent claimers")
	fs.IntVar(&o.backlog, "backlog", 200000, "events in the backlog the relay drains")
	fs.IntVar(&o.rate, "rate", 5000, "claims (events) per second for the latency phase")
	fs.DurationVar(&o.latencyFor, "latency-duration", 10*time.Second, "length of the latency phase")
	fs.DurationVar(&o.poll, "poll", 0, "the relay's poll interval (events.poll; 0: its default); one longer than a round measures writing the outbox alone")
	fs.BoolVar(&o.grpc, "grpc", false, "claim through each service's gRPC API (one connection, as a client would) instead of its domain API")
	fs.BoolVar(&o.keepRows, "keep-rows", false, "keep the coupons of earlier rounds (by default each round starts with empty coupon tables)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of each claim round to FILE.on.N and FILE.off.N")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.rounds < 1 || o.callers < 1 || o.backlog < 1 || o.rate < 1 {
		return o, errors.New("rounds, callers, backlog and rate must be positive")
	}
	return o, nil
}

// Main runs the benchmark and prints its lines to out.
func Main(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args, out)
	if err != nil {
		return err
	}
	b := &bench{o: o, out: out, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	defer b.stop()
	if err := b.startNATS(); err != nil {
		return err
	}
	on, err := b.startService(ctx, "on", true)
	if err != nil {
		return err
	}
	off, err := b.startService(ctx, "off", false)
	if err != nil {
		return err
	}
	// Templates as a running service has them: created well after it
	// started, so that claims take the steady path.
	fmt.Fprintf(b.out, "events: waiting %s so that the templates are newer than the services' request markers\n", steadyAfter)
	select {
	case <-time.After(steadyAfter):
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, s := range []*service{on, off} {
		if err := b.createTemplate(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if err := b.claims(ctx, on, off); err != nil || b.relayIdle() {
		return err
	}
	if err := b.relayThroughput(ctx, on); err != nil {
		return err
	}
	return b.latency(ctx, on)
}

type bench struct {
	o       options
	out     io.Writer
	log     *slog.Logger
	nats    string
	natsPID int
	stops   []func()
}

// cpu is CPU seconds of the processes a claim costs: this one (the
// service, and the relay when events are on), MariaDB, nats-server and
// Redis.
type cpu [4]float64

func (b *bench) cpuNow() cpu {
	return cpu{proccpu.Seconds(os.Getpid()), proccpu.Seconds(proccpu.PidOf("mariadbd")),
		proccpu.Seconds(b.natsPID), proccpu.Seconds(proccpu.PidOf("redis-server"))}
}

func (b *bench) stop() {
	for i := len(b.stops) - 1; i >= 0; i-- {
		b.stops[i]()
	}
}

// service is one coupon service of the bench.
type service struct {
	name     string
	app      *app.App
	template int64
	dbs      []*sql.DB                    // main, shard 0, shard 1
	addr     string                       // gRPC
	cli      couponv1.CouponServiceClient // set with --grpc: claims go through it
	users    atomic.Int64
}

func (b *bench) startNATS() error {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	port, err := freeport.Port()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "evbench-nats")
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nats-server (deploy/local/deps.sh installs it): %w", err)
	}
	b.natsPID = cmd.Process.Pid
	b.stops = append(b.stops, func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = os.RemoveAll(dir) })
	b.nats = fmt.Sprintf("nats://127.0.0.1:%d", port)
	for deadline := time.Now().Add(20 * time.Second); ; {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server on port %d: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the port until nats-server accepts
	}
}

func (b *bench) dsn(db string) string { return b.o.mysql + db }

func (b *bench) startService(ctx context.Context, name string, events bool) (*service, error) {
	dbName := func(role string) string { return fmt.Sprintf("%s_%s_%s", b.o.prefix, name, role) }
	root, err := sql.Open("mysql", b.o.mysql)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	for _, role := range []string{"main", "s0", "s1"} {
		if _, err := root.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+dbName(role)+"`"); err != nil {
			return nil, err
		}
	}
	b.stops = append(b.stops, func() {
		db, err := sql.Open("mysql", b.o.mysql)
		if err != nil {
			return
		}
		defer db.Close()
		for _, role := range []string{"main", "s0", "s1"} {
			_, _ = db.Exec("DROP DATABASE IF EXISTS `" + dbName(role) + "`")
		}
	})
	cfg := app.Config{
		GRPCAddr: "127.0.0.1:0",
		NodeID:   map[bool]int64{true: 1, false: 2}[events],
		Auth:     auth.Config{Enabled: true, Callers: auth.DevCallers()},
		MySQL: couponmysql.Config{
			MainDSN: b.dsn(dbName("main")), ShardDSNs: []string{b.dsn(dbName("s0")), b.dsn(dbName("s1"))},
			TablesPerShard: 8, MaxOpenConns: 16, MaxIdleConns: 16,
		},
		Redis:   app.RedisConfig{Addrs: []string{b.o.redis}, Prefix: fmt.Sprintf("%s:%s:", b.o.prefix, name), PoolSize: 64},
		Service: participant.DefaultConfig(),
	}
	if events {
		cfg.Events = relay.Config{URL: b.nats, Poll: b.o.poll}
	}
	if err := app.Migrate(ctx, cfg.MySQL); err != nil {
		return nil, fmt.Errorf("migrate %s: %w", name, err)
	}
	// What a run killed before its end left behind.
	rdb := goredis.NewClient(&goredis.Options{Addr: b.o.redis})
	err = rediskeys.Delete(ctx, rdb, cfg.Redis.Prefix)
	rdb.Close()
	if err != nil {
		return nil, fmt.Errorf("delete redis keys %s*: %w", cfg.Redis.Prefix, err)
	}
	a, err := app.Open(ctx, cfg, b.log)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		a.Close()
		return nil, err
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.ServeListeners(sctx, lis, nil); err != nil {
			b.log.Error("coupon service stopped", "err", err)
		}
	}()
	s := &service{name: name, app: a}
	b.stops = append(b.stops, func() {
		stop()
		<-done
		a.Close()
		for _, db := range s.dbs {
			db.Close()
		}
		// Each claim leaves a request marker for a day: millions of keys.
		rdb := goredis.NewClient(&goredis.Options{Addr: b.o.redis})
		defer rdb.Close()
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := rediskeys.Delete(dctx, rdb, cfg.Redis.Prefix); err != nil {
			b.log.Error("delete the bench's redis keys", "prefix", cfg.Redis.Prefix, "err", err)
		}
	})
	for _, role := range []string{"main", "s0", "s1"} {
		db, err := sql.Open("mysql", b.dsn(dbName(role))+"?parseTime=true")
		if err != nil {
			return nil, err
		}
		s.dbs = append(s.dbs, db)
	}
	s.addr = lis.Addr().String()
	if b.o.grpc {
		conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithUnaryInterceptor(auth.DevTokens().Interceptor()))
		if err != nil {
			return nil, err
		}
		b.stops = append(b.stops, func() { conn.Close() })
		s.cli = couponv1.NewCouponServiceClient(conn)
	}
	return s, nil
}

// steadyAfter is how long after a service starts a template must be
// created for its claims to take the steady path: a template created
// within 10 s of the request markers' buckets (touched when the service
// starts) may have claims whose markers were lost, so each of its claims
// first looks in MySQL for an earlier coupon (participant's mayHaveLost),
// which a template created later never does.
const steadyAfter = 11 * time.Second

// createTemplate creates and approves s's template.
func (b *bench) createTemplate(ctx context.Context, s *service) error {
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(auth.DevTokens().Interceptor()))
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := couponv1.NewAdminServiceClient(conn)
	now := time.Now()
	camp, err := admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "events bench", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(30 * 24 * time.Hour)),
	})
	if err != nil {
		return fmt.Errorf("create campaign: %w", err)
	}
	tpl, err := admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: camp.Id, Name: "events bench", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: 100_000_000, PerUserLimit: 0,
		ValidFrom: timestamppb.New(now.Add(-time.Hour)), ValidUntil: timestamppb.New(now.Add(30 * 24 * time.Hour)),
		CreatedBy: "alice",
	})
	if err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	if _, err := admin.ApproveTemplate(auth.AsToken(ctx, auth.DevTokenBob), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion(), ApprovedBy: "bob"}); err != nil {
		return fmt.Errorf("approve template: %w", err)
	}
	s.template = tpl.Id
	return nil
}

// claim makes one claim for a fresh user, through the domain API or,
// with --grpc, the gRPC API.
func (s *service) claim(ctx context.Context) error {
	u := s.users.Add(1)
	req := participant.ClaimRequest{RequestID: fmt.Sprintf("%s-%d-%d", s.name, u, rand.Uint32()), UserID: u, TemplateID: s.template}
	if s.cli != nil {
		_, err := s.cli.ClaimCoupon(ctx, &couponv1.ClaimCouponRequest{RequestId: req.RequestID, UserId: req.UserID, TemplateId: req.TemplateID})
		return err
	}
	_, err := s.app.Service().Claim(ctx, req)
	return err
}

// round claims with callers callers for d and returns claims per second,
// the claims, and the CPU they took.
func (b *bench) round(ctx context.Context, s *service, d time.Duration) (float64, int64, cpu, error) {
	cpuFrom := b.cpuNow()
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var n atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range b.o.callers {
		wg.Go(func() {
			for rctx.Err() == nil {
				if err := s.claim(context.WithoutCancel(rctx)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, cpu{}, fmt.Errorf("claim (events %s): %w", s.name, err)
	}
	took := time.Since(start)
	used := b.cpuNow()
	for i := range used {
		used[i] -= cpuFrom[i]
	}
	return float64(n.Load()) / took.Seconds(), n.Load(), used, nil
}

func (b *bench) claims(ctx context.Context, on, off *service) error {
	// A warm-up round each, not counted.
	for _, s := range []*service{on, off} {
		if _, _, _, err := b.round(ctx, s, 2*time.Second); err != nil {
			return err
		}
	}
	var rOn, rOff []float64
	claims := map[bool]int64{}
	spent := map[bool]*cpu{true: {}, false: {}}
	for i := range b.o.rounds {
		order := []*service{on, off}
		if i%2 == 1 {
			order = []*service{off, on}
		}
		for _, s := range order {
			if err := b.empty(ctx, s); err != nil {
				return err
			}
			stop, err := b.profile(fmt.Sprintf("%s.%s.%d", b.o.cpuProfile, s.name, i+1))
			if err != nil {
				return err
			}
			r, n, used, err := b.round(ctx, s, b.o.duration)
			stop()
			if err != nil {
				return err
			}
			claims[s == on] += n
			for k := range used {
				spent[s == on][k] += used[k]
			}
			if s == on {
				rOn = append(rOn, r)
			} else {
				rOff = append(rOff, r)
			}
		}
	}
	mOn, mOff := median(rOn), median(rOff)
	paired := make([]float64, len(rOn))
	for i := range rOn {
		paired[i] = rOn[i] / rOff[i]
	}
	fmt.Fprintf(b.out, "events: claims/s, %d callers, %d rounds of %s: events off %.0f %v, on %.0f %v; on/off %.2f×, median of round pairs %.2f×\n",
		b.o.callers, b.o.rounds, b.o.duration, mOff, rounded(rOff), mOn, rounded(rOn), mOn/mOff, median(paired))
	perClaim := func(on bool, k int) float64 { return spent[on][k] / float64(max(1, claims[on])) * 1e6 }
	fmt.Fprintf(b.out, "events: CPU per claim (µs), events off / on: service %.0f / %.0f, MariaDB %.0f / %.0f, Redis %.0f / %.0f, nats-server %.0f / %.0f\n",
		perClaim(false, 0), perClaim(true, 0), perClaim(false, 1), perClaim(true, 1), perClaim(false, 3), perClaim(true, 3),
		perClaim(false, 2), perClaim(true, 2))
	if b.relayIdle() {
		return nil
	}
	// Every claim of the on service has its event by now or soon: the
	// check that the relay kept up is that the outbox empties.
	return b.drained(ctx, on, time.Minute)
}

// relayIdle says whether the relay polls less often than a round lasts
// (--poll 1h): the claim rounds then measure writing the outbox alone, and
// the relay's phases are skipped.
func (b *bench) relayIdle() bool { return b.o.poll >= b.o.duration }

// profile starts a CPU profile into file (when profiles were asked for)
// and returns what stops it.
func (b *bench) profile(file string) (func(), error) {
	if b.o.cpuProfile == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// backlog counts the events waiting in s's outboxes.
func (s *service) backlog(ctx context.Context) (int64, error) {
	var total int64
	for _, db := range s.dbs {
		var n int64
		if err := db.QueryRowContext(ctx, `SELECT COALESCE(SUM(n), 0) FROM coupon_outbox`).Scan(&n); err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// empty empties s's coupon tables before a round (unless --keep-rows),
// once its relay published what the last round wrote. Every round then
// starts from the same state: rounds on a growing table slow down as it
// outgrows MariaDB's buffer pool (128 MB here by default), and that drift,
// not events, would decide the ratio.
func (b *bench) empty(ctx context.Context, s *service) error {
	if b.o.keepRows {
		return nil
	}
	// An idle relay's rows go with the coupons; a working relay publishes
	// them first, so that its work is not charged to the next round.
	outbox := "coupon_outbox"
	if !b.relayIdle() {
		if err := b.drained(ctx, s, time.Minute); err != nil {
			return err
		}
		outbox = ""
	}
	for _, db := range s.dbs[1:] {
		rs, err := db.QueryContext(ctx, `SELECT table_name FROM information_schema.tables
			WHERE table_schema = DATABASE() AND (table_name LIKE 'coupon\\_0%' OR table_name LIKE 'claim\\_count\\_%' OR table_name = ?)`, outbox)
		if err != nil {
			return err
		}
		var tables []string
		for rs.Next() {
			var t string
			if err := rs.Scan(&t); err != nil {
				rs.Close()
				return err
			}
			tables = append(tables, t)
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return err
		}
		if len(tables) == 0 {
			return errors.New("no coupon tables to empty")
		}
		for _, t := range tables {
			if _, err := db.ExecContext(ctx, "TRUNCATE TABLE `"+t+"`"); err != nil {
				return fmt.Errorf("empty %s: %w", t, err)
			}
		}
	}
	return nil
}

func (b *bench) drained(ctx context.Context, s *service, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		n, err := s.backlog(ctx)
		if err != nil || n == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the outbox still holds %d events after %s", n, within)
		}
		time.Sleep(10 * time.Millisecond) // polling the outbox until the relay empties it
	}
}

// relayThroughput commits a backlog of events into the shard outboxes at
// once (rows of 64 events, as claim batches under load write them) and
// times the service's relay draining it.
func (b *bench) relayThroughput(ctx context.Context, s *service) error {
	const perRow = 64
	per := b.o.backlog / 2
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, db := range s.dbs[1:] {
		wg.Go(func() { errs[i] = fillOutbox(ctx, db, i, per, perRow, s.template) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fill the outbox: %w", err)
	}
	filled := time.Now()
	cpuFrom := b.cpuNow()
	if err := b.drained(ctx, s, 5*time.Minute); err != nil {
		return err
	}
	took := time.Since(filled)
	used := b.cpuNow()
	perEvent := func(k int) float64 { return (used[k] - cpuFrom[k]) / float64(2*per) * 1e6 }
	fmt.Fprintf(b.out, "events: relay drained %d events (2 outboxes, rows of %d, committed in %s) in %s: %.0f events/s; CPU per event (µs): service %.1f, MariaDB %.1f, nats-server %.1f\n",
		2*per, perRow, filled.Sub(start).Round(time.Millisecond), took.Round(time.Millisecond), float64(2*per)/took.Seconds(),
		perEvent(0), perEvent(1), perEvent(2))
	return nil
}

// fillOutbox commits n coupon.claimed events into db's outbox in one
// transaction, perRow to a row.
func fillOutbox(ctx context.Context, db *sql.DB, shard, n, perRow int, template int64) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit, a no-op
	now := time.Now()
	for done := 0; done < n; {
		var args []any
		rows := 0
		for ; rows < 100 && done < n; rows++ {
			k := min(perRow, n-done)
			evs := make([]couponmysql.OutboxEvent, k)
			for j := range evs {
				id := int64(done + j + 1)
				code := fmt.Sprintf("B%d-%d", shard, id)
				evs[j] = couponmysql.OutboxEvent{EventID: participant.EventID(code, 1), Type: participant.EventClaimed, CouponID: id,
					CouponCode: code, UserID: id, TemplateID: template, Seq: 1, OccurredAt: now}
			}
			args = append(args, couponmysql.EncodeEvents(evs), k, now.UTC())
			done += k
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO coupon_outbox (events, n, occurred_at) VALUES `+
			strings.TrimSuffix(strings.Repeat("(?,?,?),", rows), ","), args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// latency claims at a steady rate and measures, at a subscriber, the time
// from each claim's timestamp to the event's arrival.
func (b *bench) latency(ctx context.Context, s *service) error {
	nc, err := nats.Connect(b.nats)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, relay.DefaultStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{relay.DefaultSubjectPrefix + participant.EventClaimed}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var lat []time.Duration
	cc, err := cons.Consume(func(m jetstream.Msg) {
		at := time.Now()
		var e couponeventsv1.Event
		if proto.Unmarshal(m.Data(), &e) != nil {
			return
		}
		mu.Lock()
		lat = append(lat, at.Sub(e.GetOccurredAt().AsTime()))
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	defer cc.Stop()
	// Claims are started in ticks of 10 ms, rate/100 each, every claim in
	// its own goroutine so a slow one does not hold the pace back.
	per := max(1, b.o.rate/100)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(b.o.latencyFor)
	var wg sync.WaitGroup
	var sent, failed atomic.Int64
	start := time.Now()
	for time.Now().Before(end) {
		<-tick.C
		for range per {
			wg.Go(func() {
				if err := s.claim(ctx); err != nil {
					failed.Add(1)
					return
				}
				sent.Add(1)
			})
		}
	}
	wg.Wait()
	rate := float64(sent.Load()) / time.Since(start).Seconds()
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		got := len(lat)
		mu.Unlock()
		if int64(got) >= sent.Load() {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the subscriber got %d of %d events", got, sent.Load())
		}
		time.Sleep(10 * time.Millisecond) // polling until the subscriber has every event
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Fprintf(b.out, "events: claim to subscriber at %.0f events/s (asked %d, %d claims, %d failed): p50 %s, p99 %s, max %s\n",
		rate, b.o.rate, sent.Load(), failed.Load(), q(0.5).Round(100*time.Microsecond), q(0.99).Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func rounded(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x + 0.5)
	}
	return out
}
