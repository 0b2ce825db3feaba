package participant_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponredis "github.com/opencoupon/coupon/participant/redis"
	"github.com/opencoupon/coupon/participant/tplcache"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// clock is real time moved forward by the test.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

type env struct {
	srv      *coupontest.Server
	clk      *clock
	svc      *participant.Service
	store    *couponmysql.Stores
	stock    *couponredis.Stock
	redis    *couponredis.Adapter
	campaign int64
}

// addToCounters adds n units to the template's live counters behind
// MySQL's back, as a top-up whose MySQL part rolled back would.
func (e *env) addToCounters(t *testing.T, tpl *couponv1.CouponTemplate, n int64) {
	t.Helper()
	gen, ok, err := e.stock.Generation(ctxT(t), tpl.Id)
	if err != nil || !ok {
		t.Fatalf("Generation = %v, %v", ok, err)
	}
	if ok, err := e.stock.Add(ctxT(t), tpl.Id, tpl.SubStockCount, n, gen, fmt.Sprintf("test-%d", time.Now().UnixNano())); err != nil || !ok {
		t.Fatalf("Add = %v, %v", ok, err)
	}
}

// newEnv starts a service on the test clock with its own background jobs
// off, so that tests drive rounds with RunOnce; opts may turn them on.
func newEnv(t *testing.T, opts ...coupontest.Option) *env {
	t.Helper()
	if testing.Short() {
		// The fast tests (*_fast_test.go) cover the decisions over fakes.
		t.Skip("needs MariaDB and Redis")
	}
	clk := &clock{}
	base := func(c *app.Config) {
		c.Now = clk.Now
		c.Service.SweepInterval, c.Service.AuditInterval, c.Service.SweepBatch = -1, -1, 2
	}
	srv := coupontest.Start(t, append([]coupontest.Option{base}, opts...)...)
	now := clk.Now()
	c, err := srv.Admin.CreateCampaign(ctxT(t), &couponv1.CreateCampaignRequest{
		Name: "expiry", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(30 * 24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	r := couponredis.New(srv.App.Redis(), srv.Prefix)
	t.Cleanup(r.Close)
	return &env{
		srv: srv, clk: clk, svc: srv.App.Service(), store: srv.App.Store(),
		stock: r.Stock, redis: r, campaign: c.Id,
	}
}

// template creates an ACTIVE template valid for window whose coupons last
// days after claim (0: until the window closes).
func (e *env) template(t *testing.T, stock int64, sub int32, window time.Duration, days int32) *couponv1.CouponTemplate {
	t.Helper()
	now := e.clk.Now()
	tpl, err := e.srv.Admin.CreateTemplate(ctxT(t), &couponv1.CreateTemplateRequest{
		CampaignId: e.campaign, Name: "5 off 50", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 500, MinOrderAmount: 5000, TotalStock: stock, SubStockCount: sub,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(window)),
		ValidDaysAfterClaim: days, CreatedBy: "alice",
	})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if tpl, err = e.srv.AdminAs(coupontest.TokenBob).ApproveTemplate(ctxT(t), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion()}); err != nil {
		t.Fatalf("ApproveTemplate: %v", err)
	}
	return tpl
}

func (e *env) claim(t *testing.T, tplID, user int64) *couponv1.Coupon {
	t.Helper()
	c, err := e.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{
		RequestId: fmt.Sprintf("claim-%d-%d", tplID, user), UserId: user, TemplateId: tplID,
	})
	if err != nil {
		t.Fatalf("ClaimCoupon(user %d): %v", user, err)
	}
	return c
}

// stored is the status in the coupon's row, not the effective one.
func (e *env) stored(t *testing.T, user int64, code string) participant.CouponStatus {
	t.Helper()
	db, table := e.store.UserShardForTest(user)
	var s participant.CouponStatus
	if err := db.QueryRowContext(ctxT(t), fmt.Sprintf(`SELECT status FROM coupon_%04d WHERE code = ?`, table), code).Scan(&s); err != nil {
		t.Fatalf("read coupon %s: %v", code, err)
	}
	return s
}

func (e *env) read(t *testing.T, user int64, code string) couponv1.Coupon_Status {
	t.Helper()
	c, err := e.srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: user, CouponCode: code})
	if err != nil {
		t.Fatalf("GetCoupon(%s): %v", code, err)
	}
	return c.Status
}

func (e *env) templateStatus(t *testing.T, id int64) couponv1.CouponTemplate_Status {
	t.Helper()
	tpl, err := e.srv.Admin.GetTemplate(ctxT(t), &couponv1.GetTemplateRequest{TemplateId: id})
	if err != nil {
		t.Fatalf("GetTemplate(%d): %v", id, err)
	}
	return tpl.Status
}

// counts returns the template's live remaining stock and total − issued.
func (e *env) counts(t *testing.T, tpl *couponv1.CouponTemplate) (remaining, want int64) {
	t.Helper()
	cur, err := e.store.Catalog.GetTemplate(ctxT(t), tpl.Id)
	if err != nil {
		t.Fatalf("GetTemplate: %v", err)
	}
	issued, err := e.store.Coupons.Issued(ctxT(t), tpl.Id)
	if err != nil {
		t.Fatalf("Issued: %v", err)
	}
	n, ok, err := e.stock.Remaining(ctxT(t), tpl.Id, cur.SubStockCount)
	if err != nil || !ok {
		t.Fatalf("Remaining = %d, %v, %v; want counters", n, ok, err)
	}
	return n, cur.TotalStock - issued
}

func mustRun(t *testing.T, what string, run func(context.Context) (bool, error)) {
	t.Helper()
	ran, err := run(ctxT(t))
	if err != nil || !ran {
		t.Fatalf("%s RunOnce = %v, %v; want a round", what, ran, err)
	}
}

func tcc(op string) participant.Branch {
	return participant.Branch{TransType: "tcc", GID: "gid-expiry", BranchID: "01", Op: op}
}

func TestExpiryBySweeperAndOnRead(t *testing.T) {
	e := newEnv(t)
	short := e.template(t, 50, 0, 48*time.Hour, 1) // coupons last a day
	long := e.template(t, 50, 0, 72*time.Hour, 0)
	// Enough coupons that some tables need several batches (batch size 2).
	users := make(map[int64]*couponv1.Coupon)
	for u := int64(1); u <= 16; u++ {
		users[u] = e.claim(t, short.Id, u)
	}
	kept := e.claim(t, long.Id, 100)
	locked := users[1]
	order := participant.BranchRequest{UserID: 1, Code: locked.Code, Order: participant.Order{OrderNo: "order-1", UserID: 1, Amount: 10000}}
	if _, err := e.svc.Lock(ctxT(t), tcc("try"), order); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	sweeper := participant.NewSweeper(e.svc, e.store.Expiry)

	e.clk.Advance(25 * time.Hour)
	// On read: expired before any sweep, while the row still says AVAILABLE.
	if got := e.read(t, 2, users[2].Code); got != couponv1.Coupon_EXPIRED {
		t.Errorf("read before sweep = %s, want EXPIRED", got)
	}
	if got := e.stored(t, 2, users[2].Code); got != participant.CouponAvailable {
		t.Errorf("stored before sweep = %s, want AVAILABLE", got)
	}

	mustRun(t, "sweeper", sweeper.RunOnce)
	for u, c := range users {
		want := participant.CouponExpired
		if u == 1 {
			want = participant.CouponLocked // not expired while locked
		}
		if got := e.stored(t, u, c.Code); got != want {
			t.Errorf("user %d stored after sweep = %s, want %s", u, got, want)
		}
	}
	if got := e.read(t, 1, locked.Code); got != couponv1.Coupon_LOCKED {
		t.Errorf("locked coupon reads %s, want LOCKED", got)
	}
	if got := e.stored(t, 100, kept.Code); got != participant.CouponAvailable {
		t.Errorf("unexpired coupon stored = %s, want AVAILABLE", got)
	}
	if got := e.templateStatus(t, short.Id); got != couponv1.CouponTemplate_ACTIVE {
		t.Errorf("template inside its window = %s, want ACTIVE", got)
	}
	if st := sweeper.Stats(); st.Expired != 15 || st.Ended != 0 {
		t.Errorf("stats = %+v, want 15 expired, 0 ended", st)
	}

	// Cancelled past its expiry, the locked coupon comes back EXPIRED.
	if _, err := e.svc.Unlock(ctxT(t), tcc("cancel"), order); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if got := e.stored(t, 1, locked.Code); got != participant.CouponExpired {
		t.Errorf("released after expiry: stored %s, want EXPIRED", got)
	}

	e.clk.Advance(24 * time.Hour) // past the short template's window only
	mustRun(t, "sweeper", sweeper.RunOnce)
	if got := e.templateStatus(t, short.Id); got != couponv1.CouponTemplate_ENDED {
		t.Errorf("template past its window = %s, want ENDED", got)
	}
	if got := e.templateStatus(t, long.Id); got != couponv1.CouponTemplate_ACTIVE {
		t.Errorf("template inside its window = %s, want ACTIVE", got)
	}
	mustRun(t, "sweeper", sweeper.RunOnce) // nothing left to do
	if st := sweeper.Stats(); st.Expired != 15 || st.Ended != 1 || st.Rounds != 3 {
		t.Errorf("stats = %+v, want 15 expired, 1 ended, 3 rounds", st)
	}
}

func TestAuditTakesOverCreditOffAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		excess int64
	}{
		{"unit by unit", 7},
		{"by a rebuild", 1500}, // more than is worth taking one by one
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tpl := e.template(t, 100, 4, 48*time.Hour, 0)
			for u := int64(1); u <= 3; u++ {
				e.claim(t, tpl.Id, u)
			}
			// Counters hold more than total − issued, e.g. an AddStock whose
			// MySQL part rolled back after its Redis part.
			e.addToCounters(t, tpl, tc.excess)
			auditor := participant.NewAuditor(e.svc)
			mustRun(t, "auditor", auditor.RunOnce)
			if got, want := e.counts(t, tpl); got != want || got != 97 {
				t.Fatalf("remaining after one round = %d, want %d (total − issued)", got, want)
			}
			mustRun(t, "auditor", auditor.RunOnce)
			if st := auditor.Stats(); st.OverCredit != 1 || st.UnderCredit != 0 || st.Failed != 0 {
				t.Fatalf("stats = %+v, want one over-credit repair", st)
			}
		})
	}
}

func TestAuditRepairsUnderCreditSeenForASettleWindow(t *testing.T) {
	e := newEnv(t)
	settle := e.srv.Config.Service.StockSettle
	tpl := e.template(t, 10, 2, 48*time.Hour, 0)
	e.claim(t, tpl.Id, 1)
	e.claim(t, tpl.Id, 2)
	// An AddStock whose Redis part was lost: MySQL has 5 more than Redis.
	if _, _, err := e.store.Catalog.AddStock(ctxT(t), participant.StockOp{RequestID: "lost-add", TemplateID: tpl.Id, Amount: 5},
		func(t *participant.Template, _ *participant.StockOp) (bool, error) {
			t.TotalStock += 5
			return true, nil
		}, participant.Actor{Identity: "test"}); err != nil {
		t.Fatalf("AddStock: %v", err)
	}
	auditor := participant.NewAuditor(e.svc)
	step := func(advance time.Duration, wantRemaining, wantRepairs int64) {
		t.Helper()
		e.clk.Advance(advance)
		mustRun(t, "auditor", auditor.RunOnce)
		got, _ := e.counts(t, tpl)
		if st := auditor.Stats(); got != wantRemaining || st.UnderCredit != wantRepairs || st.OverCredit != 0 {
			t.Fatalf("after %s: remaining %d, stats %+v; want remaining %d, %d under-credit repairs",
				advance, got, st, wantRemaining, wantRepairs)
		}
	}
	step(0, 8, 0) // first seen
	// A claim commits: the drift seen so far may have been claims in flight.
	e.claim(t, tpl.Id, 3)
	step(settle, 7, 0)   // changed: seen afresh
	step(settle/2, 7, 0) // unchanged, but not for a settle window yet
	step(settle/2, 12, 1)
	step(settle, 12, 1) // repaired: nothing more to do
}

// slowInserts makes every claim stay in flight (stock taken, coupon not yet
// committed) for a while, as under a loaded database.
type slowInserts struct {
	participant.Coupons
	delay time.Duration
}

func (s slowInserts) Insert(ctx context.Context, c participant.Claim) error {
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return participant.Unavailable("write coupon", ctx.Err())
	}
	return s.Coupons.Insert(ctx, c)
}

func TestAuditNoFalseRepairWhileClaiming(t *testing.T) {
	e := newEnv(t)
	tpl := e.template(t, 100000, 8, 48*time.Hour, 0)
	auditor := participant.NewAuditor(e.svc)
	// Half the claims run on another replica whose writes are slow, so
	// that some are always in flight; the others are quick, so that some
	// start and commit between the audit's reads.
	claimer := e.replica(t, 2, -1, slowInserts{Coupons: e.store.Coupons, delay: 100 * time.Millisecond})
	stop := make(chan struct{})
	var claimed atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := int64(w*1_000_000 + i + 1)
				var err error
				if w%2 == 0 {
					_, err = claimer.Claim(ctxT(t), participant.ClaimRequest{
						RequestID: fmt.Sprintf("load-%d", user), UserID: user, TemplateID: tpl.Id,
					})
				} else {
					_, err = e.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{
						RequestId: fmt.Sprintf("load-%d", user), UserId: user, TemplateId: tpl.Id,
					})
				}
				if err != nil {
					t.Errorf("ClaimCoupon: %v", err)
					return
				}
				claimed.Add(1)
			}
		})
	}
	// Audit back to back for longer than a settle window while claims are
	// in flight the whole time, sweeping in between: neither may disturb
	// the claims.
	sweeper := participant.NewSweeper(e.svc, e.store.Expiry)
	deadline := time.Now().Add(e.srv.Config.Service.StockSettle*2 + 500*time.Millisecond)
	for time.Now().Before(deadline) {
		mustRun(t, "auditor", auditor.RunOnce)
		mustRun(t, "sweeper", sweeper.RunOnce)
	}
	close(stop)
	wg.Wait()
	st := auditor.Stats()
	if st.OverCredit != 0 || st.UnderCredit != 0 || st.Failed != 0 || st.Rounds < 5 {
		t.Fatalf("stats = %+v after %d claims; want 5+ rounds and no repairs", st, claimed.Load())
	}
	if got, want := e.counts(t, tpl); got != want || want != 100000-claimed.Load() {
		t.Fatalf("remaining %d, total − issued %d, want both %d", got, want, 100000-claimed.Load())
	}
	t.Logf("%d rounds during %d claims", st.Rounds, claimed.Load())
}

// replica is a second service over the same stores, as another process
// would be.
func (e *env) replica(t *testing.T, node int64, every time.Duration, coupons participant.Coupons) *participant.Service {
	t.Helper()
	return e.service(t, node, func(d *participant.Deps, cfg *participant.Config) {
		d.Coupons = coupons
		cfg.SweepInterval, cfg.AuditInterval = every, every
	})
}

// service builds another replica of the service on the test's stores, with
// mod changing its ports or configuration (a test wraps a port to hold a
// call at a chosen moment).
func (e *env) service(t *testing.T, node int64, mod func(*participant.Deps, *participant.Config)) *participant.Service {
	t.Helper()
	cfg := e.srv.Config.Service
	ids, err := participant.NewIDGen(node, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := participant.Deps{
		Catalog: e.store.Catalog, Coupons: e.store.Coupons, Branches: e.store.Branches, Stock: e.stock, Requests: e.redis.Requests,
		Leases: e.redis.Leases, IDs: ids, Now: e.clk.Now,
	}
	if mod != nil {
		mod(&d, &cfg)
	}
	if d.Templates == nil {
		d.Templates = templateCache(d, e.redis.Blobs, cfg)
	}
	svc, err := participant.NewService(d, cfg)
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	return svc
}

// templateCache is a replica's own template cache, as the server wires it,
// over d's catalog and leases and over blobs.
func templateCache(d participant.Deps, blobs participant.Blobs, cfg participant.Config) participant.Templates {
	return tplcache.New(tplcache.Deps{Catalog: d.Catalog, Blobs: blobs, Leases: d.Leases, Log: d.Log, Now: d.Now},
		tplcache.Config{Refresh: cfg.TemplateRefresh, RedisTTL: cfg.TemplateRedisTTL})
}

// watched tells when rounds of two sweepers overlap: every round starts
// with EndTemplates, and a batch of a round that another round has
// started after is an overlap.
type watched struct {
	participant.Expirer
	id       int32
	owner    *atomic.Int32
	overlaps *atomic.Int32
}

func (w *watched) EndTemplates(ctx context.Context, now time.Time) ([]int64, error) {
	w.owner.Store(w.id)
	return w.Expirer.EndTemplates(ctx, now)
}

func (w *watched) ExpireBatch(ctx context.Context, table int, now time.Time, limit int) (int, error) {
	if w.owner.Load() != w.id {
		w.overlaps.Add(1)
	}
	return w.Expirer.ExpireBatch(ctx, table, now, limit)
}

func TestJobsOneActiveAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	a, b := e.replica(t, 2, 10*time.Millisecond, e.store.Coupons), e.replica(t, 3, 10*time.Millisecond, e.store.Coupons)
	done, cancel := context.WithCancel(context.Background())
	cancel()

	type runner interface {
		RunOnce(context.Context) (bool, error)
		Run(context.Context)
	}
	for _, tc := range []struct {
		name string
		a, b runner
	}{
		{"sweeper", participant.NewSweeper(a, e.store.Expiry), participant.NewSweeper(b, e.store.Expiry)},
		{"auditor", participant.NewAuditor(a), participant.NewAuditor(b)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ran := func(r runner) bool {
				ok, err := r.RunOnce(ctxT(t))
				if err != nil {
					t.Fatalf("RunOnce: %v", err)
				}
				return ok
			}
			for i, want := range []bool{true, false, true, false} {
				r := map[bool]runner{true: tc.a, false: tc.b}[i%2 == 0]
				if got := ran(r); got != want {
					t.Fatalf("round %d: ran = %v, want %v (the first holds the lease)", i, got, want)
				}
			}
			tc.a.Run(done) // a stopped replica gives the lease up
			if !ran(tc.b) || ran(tc.a) {
				t.Fatal("after the holder stopped, the other replica did not take over")
			}
			tc.b.Run(done)
		})
	}

	t.Run("running side by side", func(t *testing.T) {
		var owner, overlaps atomic.Int32
		wa := participant.NewSweeper(a, &watched{Expirer: e.store.Expiry, id: 1, owner: &owner, overlaps: &overlaps})
		wb := participant.NewSweeper(b, &watched{Expirer: e.store.Expiry, id: 2, owner: &owner, overlaps: &overlaps})
		ctxA, stopA := context.WithCancel(ctxT(t))
		ctxB, stopB := context.WithCancel(ctxT(t))
		var wg sync.WaitGroup
		wg.Go(func() { wa.Run(ctxA) })
		wg.Go(func() { wb.Run(ctxB) })
		defer func() { stopA(); stopB(); wg.Wait() }()
		testenv.Eventually(t, 10*time.Second, "20 sweeps", func() bool {
			return wa.Stats().Rounds+wb.Stats().Rounds >= 20
		})
		// Stop whichever is active; the other carries on.
		stopActive, other := stopA, wb
		if wb.Stats().Rounds > wa.Stats().Rounds {
			stopActive, other = stopB, wa
		}
		stopActive()
		before := other.Stats().Rounds
		testenv.Eventually(t, 10*time.Second, "the standby replica to take over", func() bool {
			return other.Stats().Rounds >= before+5
		})
		if n := overlaps.Load(); n != 0 {
			t.Fatalf("%d sweep batches ran while the other replica's round was under way", n)
		}
	})
}

func TestJobsRunInTheApp(t *testing.T) {
	e := newEnv(t, func(c *app.Config) {
		c.Service.SweepInterval, c.Service.AuditInterval = 20*time.Millisecond, 20*time.Millisecond
	})
	tpl := e.template(t, 20, 2, 48*time.Hour, 1)
	c := e.claim(t, tpl.Id, 1)
	e.addToCounters(t, tpl, 3)
	testenv.Eventually(t, 10*time.Second, "the app's audit to take the excess off", func() bool {
		got, want := e.counts(t, tpl)
		return got == want
	})
	e.clk.Advance(25 * time.Hour)
	testenv.Eventually(t, 10*time.Second, "the app's sweeper to expire the coupon", func() bool {
		return e.stored(t, 1, c.Code) == participant.CouponExpired
	})
}
