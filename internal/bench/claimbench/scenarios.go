package claimbench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/bench/proccpu"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponredis "github.com/opencoupon/coupon/participant/redis"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// bench is a run against one service: its clients, the service's stores
// (read for verification) and what the run created.
type bench struct {
	o     options
	runID string // starts every request ID and name of this run

	conns   []*grpc.ClientConn
	admin   couponv1.AdminServiceClient
	coupons []couponv1.CouponServiceClient // one per connection

	main   *sql.DB
	shards []*sql.DB
	// route is the service's shard map, read from its main database: the
	// tables the service writes each user's coupons to.
	route *couponmysql.Stores
	rdb   goredis.UniversalClient
	stock *couponredis.Stock

	campaignID int64
	checked    bool // the flags were found to match the service
	seq        atomic.Int64
	userBase   int64
	users      atomic.Int64

	mu      sync.Mutex
	created []int64 // templates, ended when the run ends

	violations violations
	mariadb    int // MariaDB's pid when it runs here, for CPU per claim
}

func open(ctx context.Context, o options) (_ *bench, err error) {
	b := &bench{o: o, runID: "cb" + token(), userBase: rand.Int64N(1<<31) << 31, mariadb: proccpu.PidOf("mariadbd")}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.main, err = openDB(ctx, o.mysqlMain, 4); err != nil {
		return nil, fmt.Errorf("open main database: %w", err)
	}
	for i, dsn := range o.mysqlShards {
		db, err := openDB(ctx, dsn, 4)
		if err != nil {
			return nil, fmt.Errorf("open shard %d: %w", i, err)
		}
		b.shards = append(b.shards, db)
	}
	b.route, err = couponmysql.Open(ctx, couponmysql.Config{MainDSN: o.mysqlMain, ShardDSNs: o.mysqlShards,
		TablesPerShard: o.tablesPerShard, MaxOpenConns: 1})
	if err != nil {
		return nil, fmt.Errorf("read the service's shard map: %w", err)
	}
	b.rdb = app.NewRedis(app.RedisConfig{Addrs: o.redis, PoolSize: 8})
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("ping redis %v: %w", o.redis, err)
	}
	b.stock = couponredis.New(b.rdb, o.redisPrefix).Stock
	for range o.conns {
		conn, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithUnaryInterceptor(auth.Tokens{Admin: o.adminToken, App: o.appToken}.Interceptor()))
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", o.addr, err)
		}
		b.conns = append(b.conns, conn)
		b.coupons = append(b.coupons, couponv1.NewCouponServiceClient(conn))
	}
	b.admin = couponv1.NewAdminServiceClient(b.conns[0])
	// Connect every connection up front, so that the first scenario does
	// not measure connection setup.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, c := range b.conns {
		c.Connect()
		for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
			if !c.WaitForStateChange(wctx, s) {
				return nil, fmt.Errorf("connect to %s: still %s after 10s", o.addr, s)
			}
		}
	}
	now := time.Now()
	camp, err := b.admin.CreateCampaign(wctx, &couponv1.CreateCampaignRequest{
		RequestId: b.runID + "-campaign", Name: "claimbench " + b.runID, CampaignType: "BENCH", CreatedBy: b.o.maker,
		StartTime: timestamppb.New(now.Add(-time.Minute)), EndTime: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	b.campaignID = camp.Id
	return b, nil
}

// openDB opens a small pool with the parameters the service uses.
func openDB(ctx context.Context, dsn string, size int) (*sql.DB, error) {
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	c.ParseTime = true
	c.Loc = time.UTC
	c.InterpolateParams = true
	if c.Timeout == 0 {
		c.Timeout = 3 * time.Second
	}
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(size)
	db.SetMaxIdleConns(size)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ping %s/%s: %w", c.Addr, c.DBName, err)
	}
	return db, nil
}

// close ends the run's templates and campaign, so that they stop taking
// claims, and closes every connection.
func (b *bench) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if b.admin != nil {
		var wg sync.WaitGroup
		ids := make(chan int64)
		for range 4 {
			wg.Go(func() {
				for id := range ids {
					_, _ = b.admin.UpdateTemplate(ctx, &couponv1.UpdateTemplateRequest{
						TemplateId: id, Status: couponv1.CouponTemplate_ENDED, UpdatedBy: b.o.maker})
				}
			})
		}
		for _, id := range b.created {
			ids <- id
		}
		close(ids)
		wg.Wait()
		if b.campaignID != 0 {
			_, _ = b.admin.UpdateCampaign(ctx, &couponv1.UpdateCampaignRequest{
				CampaignId: b.campaignID, Status: couponv1.Campaign_ENDED, UpdatedBy: b.o.maker})
		}
	}
	for _, c := range b.conns {
		c.Close()
	}
	if b.main != nil {
		b.main.Close()
	}
	for _, db := range b.shards {
		db.Close()
	}
	if b.route != nil {
		b.route.Close()
	}
	if b.rdb != nil {
		b.rdb.Close()
	}
}

func (b *bench) requestID() string {
	return b.runID + "-" + strconv.FormatInt(b.seq.Add(1), 36)
}

func (b *bench) newUser() int64 { return b.userBase + b.users.Add(1) }

func (b *bench) phase() phase {
	return phase{clients: b.o.concurrency, warmup: b.o.warmup, duration: b.o.duration, pid: b.o.pid, mariadb: b.mariadb}
}

// createTemplates creates and approves n ACTIVE templates for a scenario.
func (b *bench) createTemplates(ctx context.Context, scenario string, n int, stock int64, limit int32) ([]*couponv1.CouponTemplate, error) {
	now := time.Now()
	tpls := make([]*couponv1.CouponTemplate, n)
	errs := make([]error, n)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(n, 8) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				tpls[i], errs[i] = b.createTemplate(ctx, fmt.Sprintf("%s-%s-%d", b.runID, scenario, i), now, stock, limit)
			}
		})
	}
	wg.Wait()
	b.mu.Lock()
	for _, t := range tpls {
		if t != nil {
			b.created = append(b.created, t.Id)
		}
	}
	b.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !b.checked {
		if err := b.checkFlags(ctx, tpls[0]); err != nil {
			return nil, err
		}
		b.checked = true
	}
	return tpls, nil
}

func (b *bench) createTemplate(ctx context.Context, name string, now time.Time, stock int64, limit int32) (*couponv1.CouponTemplate, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t, err := b.admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		RequestId: name, CampaignId: b.campaignID, Name: "claimbench " + name,
		CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 100,
		TotalStock: stock, PerUserLimit: limit, CreatedBy: b.o.maker,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(24 * time.Hour)),
	})
	if err != nil {
		return nil, fmt.Errorf("create template %s: %w", name, err)
	}
	if t, err = b.admin.ApproveTemplate(auth.AsToken(ctx, b.o.approverToken), &couponv1.ApproveTemplateRequest{TemplateId: t.Id, Version: t.GetVersion(), ApprovedBy: b.o.checker}); err != nil {
		return nil, fmt.Errorf("approve template %s: %w", name, err)
	}
	return t, nil
}

// checkFlags makes sure that the databases and Redis the bench verifies
// against are the service's: a new template is in the main database and
// its stock counters are in Redis under the prefix.
func (b *bench) checkFlags(ctx context.Context, t *couponv1.CouponTemplate) error {
	var total int64
	err := b.main.QueryRowContext(ctx, `SELECT total_stock FROM coupon_template WHERE id = ?`, t.Id).Scan(&total)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("template %d the service just created is not in %s: does --mysql-main name the service's main database?", t.Id, b.o.mysqlMain)
	}
	if err != nil {
		return fmt.Errorf("read template %d: %w", t.Id, err)
	}
	if _, ok, err := b.stock.Remaining(ctx, t.Id, t.SubStockCount); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("no stock counters of template %d under Redis prefix %q: do --redis and --redis-prefix match the service?", t.Id, b.o.redisPrefix)
	}
	return nil
}

func ids(tpls []*couponv1.CouponTemplate) []int64 {
	out := make([]int64, len(tpls))
	for i, t := range tpls {
		out[i] = t.Id
	}
	return out
}

// claims runs the claim mix on n templates: many (n > 1) or hot (n = 1).
func (b *bench) claims(ctx context.Context, name string, n int) (*Result, *Verify, error) {
	tpls, err := b.createTemplates(ctx, name, n, b.o.stock, int32(b.o.perUserLimit))
	if err != nil {
		return nil, nil, err
	}
	tally := &tally{}
	res, err := b.phase().run(ctx, func(i int) unit {
		return b.newClaimer(i, ids(tpls), int32(b.o.perUserLimit), tally).mixed
	})
	if err != nil {
		return nil, nil, err
	}
	res.Kind, res.Scenario = "claim", name
	ver, err := b.verify(ctx, name, tpls, tally)
	return res, ver, err
}

// soldOut runs a storm of single claims, each by a new user, on a small stock.
func (b *bench) soldOut(ctx context.Context) (*Result, *Verify, error) {
	tpls, err := b.createTemplates(ctx, scenarioSoldOut, 1, b.o.soldOutStock, 1)
	if err != nil {
		return nil, nil, err
	}
	tally := &tally{}
	ph := phase{clients: b.o.concurrency, attempts: b.o.soldOutAttempts, pid: b.o.pid}
	res, err := ph.run(ctx, func(i int) unit { return b.newClaimer(i, ids(tpls), 1, tally).single })
	if err != nil {
		return nil, nil, err
	}
	res.Kind, res.Scenario = "claim", scenarioSoldOut
	ver, err := b.verify(ctx, scenarioSoldOut, tpls, tally)
	if err != nil {
		return nil, nil, err
	}
	if ver.Taken < b.o.soldOutStock && b.o.soldOutAttempts >= 2*b.o.soldOutStock {
		// Not an oversell, so not a violation; but worth seeing.
		res.Errors["UNSOLD_STOCK"] = b.o.soldOutStock - ver.Taken
	}
	return res, ver, nil
}

// getTemplates reads templates by ID.
func (b *bench) getTemplates(ctx context.Context) (*Result, error) {
	tpls, err := b.createTemplates(ctx, scenarioGet, b.o.getTemplates, 1000, 0)
	if err != nil {
		return nil, err
	}
	res, err := b.phase().run(ctx, func(i int) unit {
		cli := b.coupons[i%len(b.coupons)]
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		return func(ctx context.Context, rec *recorder) {
			want := tpls[rng.IntN(len(tpls))]
			req := &couponv1.GetTemplateRequest{TemplateId: want.Id}
			start := time.Now()
			cctx, cancel := context.WithTimeout(ctx, b.o.timeout)
			t, err := cli.GetTemplate(cctx, req)
			cancel()
			if rec.observe(start, err) && err == nil {
				if t.Id != want.Id || t.TotalStock != want.TotalStock {
					rec.fail("WRONG_TEMPLATE")
					return
				}
				rec.ok++
			}
		}
	})
	if err != nil {
		return nil, err
	}
	res.Kind, res.Scenario = "read", scenarioGet
	return res, nil
}

// health calls grpc.health.v1 Health/Check, the cheapest call the server
// answers: the ceiling the reads and refusals are compared against, with
// the same clients and connections.
func (b *bench) health(ctx context.Context) (*Result, error) {
	res, err := b.phase().run(ctx, func(i int) unit {
		cli := healthpb.NewHealthClient(b.conns[i%len(b.conns)])
		return func(ctx context.Context, rec *recorder) {
			start := time.Now()
			cctx, cancel := context.WithTimeout(ctx, b.o.timeout)
			r, err := cli.Check(cctx, &healthpb.HealthCheckRequest{})
			cancel()
			if rec.observe(start, err) && err == nil {
				if r.Status != healthpb.HealthCheckResponse_SERVING {
					rec.fail("NOT_SERVING")
					return
				}
				rec.ok++
			}
		}
	})
	if err != nil {
		return nil, err
	}
	res.Kind, res.Scenario = "read", scenarioHealth
	return res, nil
}

// listCoupons gives --list-users new users --list-coupons coupons each,
// then reads their coupon lists.
func (b *bench) listCoupons(ctx context.Context) (*Result, *Verify, error) {
	users, per := b.o.listUsers, b.o.listCoupons
	tpls, err := b.createTemplates(ctx, scenarioList, 1, int64(users*per), 0)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]int64, users)
	for i := range ids {
		ids[i] = b.newUser()
	}
	if err := b.seed(ctx, tpls[0].Id, ids, per); err != nil {
		return nil, nil, err
	}
	res, err := b.phase().run(ctx, func(i int) unit {
		cli := b.coupons[i%len(b.coupons)]
		rng := rand.New(rand.NewPCG(uint64(i), 2))
		return func(ctx context.Context, rec *recorder) {
			req := &couponv1.ListUserCouponsRequest{UserId: ids[rng.IntN(len(ids))], PageSize: int32(max(per, 20))}
			start := time.Now()
			cctx, cancel := context.WithTimeout(ctx, b.o.timeout)
			resp, err := cli.ListUserCoupons(cctx, req)
			cancel()
			if rec.observe(start, err) && err == nil {
				if len(resp.Coupons) < per {
					rec.fail("INCOMPLETE_LIST")
					return
				}
				rec.ok++
			}
		}
	})
	if err != nil {
		return nil, nil, err
	}
	res.Kind, res.Scenario = "read", scenarioList
	ver, err := b.verify(ctx, scenarioList, tpls, &tally{})
	return res, ver, err
}

// seed claims per coupons of template for each user, retrying a failed
// claim with its request ID.
func (b *bench) seed(ctx context.Context, template int64, users []int64, per int) error {
	n := int64(len(users) * per)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, b.o.concurrency)
	for w := range b.o.concurrency {
		cli := b.coupons[w%len(b.coupons)]
		wg.Go(func() {
			for k := next.Add(1) - 1; k < n && ctx.Err() == nil; k = next.Add(1) - 1 {
				req := &couponv1.ClaimCouponRequest{RequestId: b.requestID(), UserId: users[k%int64(len(users))], TemplateId: template}
				var err error
				for range 5 {
					cctx, cancel := context.WithTimeout(ctx, b.o.timeout)
					_, err = cli.ClaimCoupon(cctx, req)
					cancel()
					if err == nil || !transient(err) {
						break
					}
				}
				if err != nil {
					errs[w] = fmt.Errorf("seed coupons for user %d: %w", req.UserId, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// transient reports whether a call may succeed if tried again.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// tally is what the clients of a claim scenario leave for verification.
type tally struct {
	mu      sync.Mutex
	retried []claimed // a sample of replayed requests, checked against the records
	seen    int
	bursts  atomic.Int64
}

const maxRetrySample = 200

func (t *tally) replayed(c claimed) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seen++
	if len(t.retried) < maxRetrySample {
		t.retried = append(t.retried, c)
	} else if i := rand.IntN(t.seen); i < maxRetrySample {
		t.retried[i] = c // reservoir sampling
	}
}

// claimed is a request that got a coupon.
type claimed struct {
	req  *couponv1.ClaimCouponRequest
	code string
}

// claimer is one client of a claim scenario.
type claimer struct {
	b      *bench
	cli    couponv1.CouponServiceClient
	tpls   []int64
	limit  int32
	rng    *rand.Rand
	tally  *tally
	recent [32]claimed // this client's latest coupons, for retries
	n      int
}

func (b *bench) newClaimer(i int, tpls []int64, limit int32, t *tally) *claimer {
	return &claimer{b: b, cli: b.coupons[i%len(b.coupons)], tpls: tpls, limit: limit, tally: t,
		rng: rand.New(rand.NewPCG(uint64(b.userBase), uint64(i)))}
}

func (c *claimer) fresh(user int64) *couponv1.ClaimCouponRequest {
	return &couponv1.ClaimCouponRequest{RequestId: c.b.requestID(), UserId: user, TemplateId: c.tpls[c.rng.IntN(len(c.tpls))]}
}

func (c *claimer) remember(req *couponv1.ClaimCouponRequest, code string) {
	c.recent[c.n%len(c.recent)] = claimed{req: req, code: code}
	c.n++
}

// outcome is one call of a claim.
type outcome struct {
	start, end time.Time
	coupon     *couponv1.Coupon
	err        error
}

func (c *claimer) call(ctx context.Context, req *couponv1.ClaimCouponRequest) outcome {
	o := outcome{start: time.Now()}
	cctx, cancel := context.WithTimeout(ctx, c.b.o.timeout)
	o.coupon, o.err = c.cli.ClaimCoupon(cctx, req)
	cancel()
	o.end = time.Now()
	if o.err == nil {
		cp := o.coupon
		if cp.RequestId != req.RequestId || cp.UserId != req.UserId || cp.TemplateId != req.TemplateId || cp.Code == "" {
			c.b.violations.add("claim %s (user %d, template %d) returned coupon %q of request %s, user %d, template %d",
				req.RequestId, req.UserId, req.TemplateId, cp.Code, cp.RequestId, cp.UserId, cp.TemplateId)
		}
	}
	return o
}

// concurrently sends the requests at once and returns their outcomes.
func (c *claimer) concurrently(ctx context.Context, reqs ...*couponv1.ClaimCouponRequest) []outcome {
	out := make([]outcome, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { out[i] = c.call(ctx, r) })
	}
	wg.Wait()
	return out
}

// mixed is the claim mix of the many and hot scenarios: mostly one claim by
// a new user, and a few retries and limit bursts.
func (c *claimer) mixed(ctx context.Context, rec *recorder) {
	o := c.b.o
	switch x := c.rng.Float64(); {
	case x < o.retries/2 && c.n > 0:
		c.retryLater(ctx, rec)
	case x < o.retries:
		c.retryNow(ctx, rec)
	case x < o.retries+o.bursts && c.limit > 0:
		c.burst(ctx, rec)
	default:
		c.single(ctx, rec)
	}
}

// single: one claim by a new user.
func (c *claimer) single(ctx context.Context, rec *recorder) {
	req := c.fresh(c.b.newUser())
	o := c.call(ctx, req)
	if rec.observeAt(o.start, o.end, o.err) && o.err == nil {
		rec.ok++
	}
	if o.err == nil {
		c.remember(req, o.coupon.Code)
	}
}

// retryLater re-sends one of this client's finished claims: it must get
// the same coupon back.
func (c *claimer) retryLater(ctx context.Context, rec *recorder) {
	prev := c.recent[c.rng.IntN(min(c.n, len(c.recent)))]
	o := c.call(ctx, prev.req)
	measured := rec.observeAt(o.start, o.end, o.err)
	switch {
	case o.err == nil && o.coupon.Code != prev.code:
		c.b.violations.add("retry of request %s returned coupon %s, the first call %s", prev.req.RequestId, o.coupon.Code, prev.code)
	case o.err == nil:
		if measured {
			rec.replays++
		}
		c.tally.replayed(prev)
	case !transient(o.err):
		c.b.violations.add("retry of request %s, which got coupon %s, was refused: %v", prev.req.RequestId, prev.code, o.err)
	}
}

// retryNow sends a new claim twice at once, as a client retrying too early
// would: at most one coupon may come of it.
func (c *claimer) retryNow(ctx context.Context, rec *recorder) {
	req := c.fresh(c.b.newUser())
	out := c.concurrently(ctx, req, req)
	var codes []string
	for _, o := range out {
		if rec.observeAt(o.start, o.end, o.err) && o.err == nil {
			if len(codes) == 0 {
				rec.ok++
			} else {
				rec.replays++
			}
		}
		if o.err == nil {
			codes = append(codes, o.coupon.Code)
		}
	}
	if len(codes) == 2 && codes[0] != codes[1] {
		c.b.violations.add("request %s sent twice at once produced two coupons, %s and %s", req.RequestId, codes[0], codes[1])
	}
	if len(codes) > 0 {
		c.remember(req, codes[0])
		c.tally.replayed(claimed{req: req, code: codes[0]})
	}
}

// burst sends limit+1 claims of one new user on one template at once: the
// limit must hold under concurrency.
func (c *claimer) burst(ctx context.Context, rec *recorder) {
	user := c.b.newUser()
	first := c.fresh(user)
	reqs := []*couponv1.ClaimCouponRequest{first}
	for range c.limit {
		reqs = append(reqs, &couponv1.ClaimCouponRequest{RequestId: c.b.requestID(), UserId: user, TemplateId: first.TemplateId})
	}
	c.tally.bursts.Add(1)
	got := 0
	for i, o := range c.concurrently(ctx, reqs...) {
		if rec.observeAt(o.start, o.end, o.err) && o.err == nil {
			rec.ok++
		}
		if o.err == nil {
			got++
			c.remember(reqs[i], o.coupon.Code)
		}
	}
	if got > int(c.limit) {
		c.b.violations.add("user %d got %d coupons of template %d at once, over the limit of %d", user, got, first.TemplateId, c.limit)
	}
}
