package participant_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
	couponredis "github.com/opencoupon/coupon/participant/redis"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestLockRefusesExpiredUnswept: a coupon past its expire_at that the
// sweeper has not marked yet is refused by Try with COUPON_EXPIRED.
func TestLockRefusesExpiredUnswept(t *testing.T) {
	e := newEnv(t)
	tpl := e.template(t, 10, 0, 72*time.Hour, 1) // coupons last one day
	c := e.claim(t, tpl.Id, 1)
	e.clk.Advance(25 * time.Hour)
	if got := e.stored(t, 1, c.Code); got != participant.CouponAvailable {
		t.Fatalf("stored status = %s, want AVAILABLE (unswept)", got)
	}
	req := participant.BranchRequest{UserID: 1, Code: c.Code, Order: participant.Order{OrderNo: "o-late", UserID: 1, Amount: 10000}}
	_, err := e.svc.Lock(ctxT(t), tcc("try"), req)
	if participant.ErrorCode(err) != participant.EABORTED || participant.ErrorReason(err) != participant.ReasonCouponExpired {
		t.Fatalf("Lock = %v, want EABORTED COUPON_EXPIRED", err)
	}
	if got := e.stored(t, 1, c.Code); got != participant.CouponAvailable {
		t.Fatalf("stored status after the refusal = %s, want AVAILABLE", got)
	}
}

// holdingStock wraps the real Redis stock and holds a chosen call until
// released, to place it at a chosen moment of a race.
type holdingStock struct {
	*couponredis.Stock
	holdAdd     bool
	addEntered  chan struct{}
	releaseAdd  chan struct{}
	takeLatency time.Duration
	addOK       atomic.Bool
}

func (h *holdingStock) Add(ctx context.Context, id int64, k int32, n int64, gen, opID string) (bool, error) {
	if h.holdAdd {
		close(h.addEntered)
		<-h.releaseAdd
	}
	ok, err := h.Stock.Add(ctx, id, k, n, gen, opID)
	h.addOK.Store(ok)
	return ok, err
}

func (h *holdingStock) Take(ctx context.Context, id int64, k int32, hint uint64) (participant.Ticket, error) {
	tk, err := h.Stock.Take(ctx, id, k, hint)
	if h.takeLatency > 0 {
		// The unit is taken; the reply is slow to arrive.
		time.Sleep(h.takeLatency)
	}
	return tk, err
}

// TestAddStockRacingRebuild: a top-up commits to MySQL, then the counters
// are rebuilt from MySQL (which counts it), then the top-up's Redis add
// arrives. Stamped with the generation it read, the add must not land on
// the rebuilt counters: the stock would be counted twice.
func TestAddStockRacingRebuild(t *testing.T) {
	e := newEnv(t)
	tpl := e.template(t, 100, 2, 48*time.Hour, 0)
	h := &holdingStock{Stock: e.stock, holdAdd: true, addEntered: make(chan struct{}), releaseAdd: make(chan struct{})}
	admin := e.service(t, 2, func(d *participant.Deps, _ *participant.Config) { d.Stock = h })
	done := make(chan error, 1)
	go func() {
		_, err := admin.AddStock(ctxT(t), participant.StockOp{RequestID: "topup-1", TemplateID: tpl.Id, Amount: 50})
		done <- err
	}()
	<-h.addEntered // committed in MySQL; the Redis add is about to be sent
	// Redis loses the counters; the next claim rebuilds them from MySQL.
	testenv.DeleteKeys(t, e.srv.App.Redis(), e.srv.Prefix+"stock:")
	e.claim(t, tpl.Id, 1)
	close(h.releaseAdd)
	if err := <-done; err != nil {
		t.Fatalf("AddStock: %v", err)
	}
	if h.addOK.Load() {
		t.Fatal("the top-up was added to counters rebuilt after it committed")
	}
	got, want := e.counts(t, tpl)
	if got != want || want != 149 {
		t.Fatalf("remaining = %d, total − issued = %d; want both 149", got, want)
	}
}

// holdingCatalog wraps the real catalog and, when armed, holds a reload
// after it has read the template from MySQL.
type holdingCatalog struct {
	participant.Catalog
	mu      sync.Mutex
	armed   bool
	read    chan struct{}
	release chan struct{}
}

func (h *holdingCatalog) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.read, h.release = true, make(chan struct{}), make(chan struct{})
}

func (h *holdingCatalog) GetTemplate(ctx context.Context, id int64) (*participant.Template, error) {
	t, err := h.Catalog.GetTemplate(ctx, id)
	h.mu.Lock()
	armed, read, release := h.armed, h.read, h.release
	h.armed = false
	h.mu.Unlock()
	if armed {
		close(read)
		<-release
	}
	return t, err
}

// countingBlobs counts stores into the Redis level.
type countingBlobs struct {
	participant.Blobs
	puts atomic.Int64
}

func (c *countingBlobs) PutBlob(ctx context.Context, key string, v []byte, ttl time.Duration, stamp string) (bool, error) {
	defer c.puts.Add(1)
	return c.Blobs.PutBlob(ctx, key, v, ttl, stamp)
}

// TestTemplateChangeRacingReload: a cache reload reads a template from
// MySQL, an admin change commits and invalidates, then the reload stores
// what it read. Neither the Redis level nor the replica's memory may keep
// the old version past one refresh interval.
func TestTemplateChangeRacingReload(t *testing.T) {
	for _, tc := range []struct {
		name      string
		onReplica bool // the change goes through the replica that reloads
	}{{"change on another replica", false}, {"change on the reloading replica", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tpl := e.template(t, 10, 0, 48*time.Hour, 0)
			cat := &holdingCatalog{Catalog: e.store.Catalog}
			blobs := &countingBlobs{Blobs: e.redis.Blobs}
			replica := e.service(t, 2, func(d *participant.Deps, cfg *participant.Config) {
				d.Catalog = cat
				d.Templates = templateCache(*d, blobs, *cfg)
			})
			if _, err := replica.PublicTemplate(ctxT(t), tpl.Id); err != nil {
				t.Fatal(err)
			}
			// The Redis entry is gone (expired); the next reload reads MySQL.
			testenv.DeleteKeys(t, e.srv.App.Redis(), e.srv.Prefix+"cache:")
			cat.arm()
			e.clk.Advance(2 * e.srv.Config.Service.TemplateRefresh)
			if e.srv.Config.Service.TemplateRefresh == 0 {
				e.clk.Advance(2 * time.Second)
			}
			if _, err := replica.PublicTemplate(ctxT(t), tpl.Id); err != nil { // starts the reload
				t.Fatal(err)
			}
			<-cat.read
			name := "renamed"
			change := participant.TemplateChange{Name: &name}
			var err error
			if tc.onReplica {
				_, err = replica.UpdateTemplate(ctxT(t), tpl.Id, change)
			} else {
				_, err = e.svc.UpdateTemplate(ctxT(t), tpl.Id, change)
			}
			if err != nil {
				t.Fatal(err)
			}
			puts := blobs.puts.Load()
			close(cat.release)
			// The stale read must not reach Redis.
			testenv.Eventually(t, 5*time.Second, "the reload to finish", func() bool { return blobs.puts.Load() > puts })
			b, ok, err := e.redis.Blobs.GetBlob(ctxT(t), fmt.Sprintf("tpl:%d", tpl.Id))
			if err != nil {
				t.Fatal(err)
			}
			if ok && !strings.Contains(string(b), "renamed") {
				t.Fatalf("redis holds the version read before the change: %s", b)
			}
			// Within a refresh interval every replica serves the change.
			deadline := time.Now().Add(5 * time.Second)
			for {
				got, err := replica.PublicTemplate(ctxT(t), tpl.Id)
				if err != nil {
					t.Fatal(err)
				}
				if got.Name == "renamed" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("replica still serves %q after the change and a refresh", got.Name)
				}
				e.clk.Advance(time.Second)
				time.Sleep(20 * time.Millisecond) // let the background reload run
			}
		})
	}
}

// TestRequestIDAcrossUsers: a request ID is unique per coupon table. A
// second user reusing it in the same table is REQUEST_ID_CONFLICT, with or
// without the Redis marker — never Unavailable. In another table the marker
// is what catches it, while it lives.
func TestRequestIDAcrossUsers(t *testing.T) {
	e := newEnv(t)
	tpl := e.template(t, 100, 0, 48*time.Hour, 0)
	a := int64(1)
	var sameTable, otherTable int64
	for u := int64(2); sameTable == 0 || otherTable == 0; u++ {
		if e.store.ShardMap.TableOf(u) == e.store.ShardMap.TableOf(a) {
			if sameTable == 0 {
				sameTable = u
			}
		} else if otherTable == 0 {
			otherTable = u
		}
	}
	claim := func(req string, user int64) (*couponv1.Coupon, error) {
		return e.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: req, UserId: user, TemplateId: tpl.Id})
	}
	wantConflict := func(what string, err error) {
		t.Helper()
		if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "request_id") {
			t.Fatalf("%s: %v, want FailedPrecondition REQUEST_ID_CONFLICT", what, err)
		}
	}
	dropMarkers := func() { testenv.DeleteKeys(t, e.srv.App.Redis(), e.srv.Prefix+"req:") }

	if _, err := claim("shared-1", a); err != nil {
		t.Fatal(err)
	}
	_, err := claim("shared-1", sameTable)
	wantConflict("same table, marker alive", err)
	dropMarkers()
	_, err = claim("shared-1", sameTable)
	wantConflict("same table, marker gone", err)
	// The first user's retry still gets its coupon.
	if c, err := claim("shared-1", a); err != nil || c.UserId != a {
		t.Fatalf("retry of the first claim = %v, %v", c, err)
	}

	if _, err := claim("shared-2", a); err != nil {
		t.Fatal(err)
	}
	_, err = claim("shared-2", otherTable)
	wantConflict("other table, marker alive", err)
	dropMarkers()
	// Past the marker the scope is per table: the other table has no such key.
	c, err := claim("shared-2", otherTable)
	if err != nil || c.UserId != otherTable || c.RequestId != "shared-2" {
		t.Fatalf("claim in another table without the marker = %v, %v; want a coupon of its own", c, err)
	}
	st, err := e.srv.Admin.GetTemplateStats(ctxT(t), &couponv1.GetTemplateStatsRequest{TemplateId: tpl.Id})
	if err != nil || st.Issued != 3 || st.RemainingStock != 97 {
		t.Fatalf("stats = %v, %v; want 3 issued, 97 left", st, err)
	}
}

// TestClaimWriteBoundedFromTake: the claim's write deadline runs from the
// moment its unit was taken, not from when the Take's reply arrived, so a
// claim whose Take answered late cannot commit after a counter rebuild's
// settle window (which would oversell). It fails and gives the unit back.
func TestClaimWriteBoundedFromTake(t *testing.T) {
	e := newEnv(t)
	tpl := e.template(t, 10, 0, 48*time.Hour, 0)
	h := &holdingStock{Stock: e.stock, takeLatency: e.srv.Config.Service.ClaimWriteTimeout + 200*time.Millisecond}
	slow := e.service(t, 2, func(d *participant.Deps, _ *participant.Config) { d.Stock = h })
	_, err := slow.Claim(ctxT(t), participant.ClaimRequest{RequestID: "late-1", UserID: 1, TemplateID: tpl.Id})
	if participant.ErrorCode(err) != participant.EUNAVAILABLE {
		t.Fatalf("claim with a late Take = %v, want Unavailable", err)
	}
	got, want := e.counts(t, tpl)
	if got != 10 || want != 10 {
		t.Fatalf("remaining = %d, total − issued = %d; want 10 and 10 (unit given back, nothing written)", got, want)
	}
}

// TestRedisStallConservesStock stalls Redis longer than the client's read
// timeout while claims run, including claims refused at the per-user limit
// whose unit goes back. A timed-out call is not re-sent, and every change
// is idempotent besides, so the counters never hold more than total −
// issued; once the audit has repaired units taken by calls whose answer was
// lost, remaining + issued = total exactly.
func TestRedisStallConservesStock(t *testing.T) {
	proxy := testenv.StartProxy(t, testenv.RedisAddr())
	e := newEnv(t, func(c *app.Config) { c.Redis.Addrs = []string{proxy.Addr} })
	direct := goredis.NewClient(&goredis.Options{Addr: testenv.RedisAddr()})
	t.Cleanup(func() { direct.Close() })
	probe := couponredis.New(direct, e.srv.Prefix)
	t.Cleanup(probe.Close)
	const total = 500
	tpl := e.template(t, total, 4, 48*time.Hour, 0)
	if _, err := e.srv.Admin.UpdateTemplate(ctxT(t), &couponv1.UpdateTemplateRequest{TemplateId: tpl.Id, PerUserLimit: ptr(int32(1))}); err != nil {
		t.Fatal(err)
	}
	remainingPlusIssued := func() int64 {
		n, ok, err := probe.Stock.Remaining(ctxT(t), tpl.Id, tpl.SubStockCount)
		if err != nil || !ok {
			t.Fatalf("Remaining = %v, %v", ok, err)
		}
		issued, err := e.store.Coupons.Issued(ctxT(t), tpl.Id)
		if err != nil {
			t.Fatal(err)
		}
		return n + issued
	}

	var wg sync.WaitGroup
	var calls, failed, okClaims atomic.Int64
	stop := make(chan struct{})
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// Each user claims three times: one coupon, two refusals
				// at the limit whose units go back.
				user := int64(w*1000 + i/3 + 1)
				calls.Add(1)
				_, err := e.svc.Claim(ctxT(t), participant.ClaimRequest{RequestID: fmt.Sprintf("stall-%d-%d", w, i), UserID: user, TemplateID: tpl.Id})
				switch {
				case err == nil:
					okClaims.Add(1)
				case participant.ErrorReason(err) != participant.ReasonUserLimitReached:
					failed.Add(1)
					time.Sleep(5 * time.Millisecond) // a client backs off before retrying
				}
			}
		}()
	}
	testenv.Eventually(t, 10*time.Second, "claims under way", func() bool { return calls.Load() > 50 })
	proxy.Stall()
	time.Sleep(2500 * time.Millisecond) // the fault: Redis answers nothing for 2.5 s (read timeout 1 s)
	proxy.Resume()
	after := okClaims.Load()
	testenv.Eventually(t, 20*time.Second, "claims succeeding after the stall", func() bool { return okClaims.Load() > after+50 })
	close(stop)
	wg.Wait()
	t.Logf("%d claims, %d failed (not at the limit) around the stall", calls.Load(), failed.Load())
	// Whatever the stall left, the counters must not promise stock that is not there.
	if got := remainingPlusIssued(); got > total {
		t.Fatalf("remaining + issued = %d > total %d: oversold", got, total)
	}
	// The audit repairs what calls with lost answers took: exact again.
	auditor := participant.NewAuditor(e.svc)
	mustRun(t, "audit", auditor.RunOnce)
	e.clk.Advance(e.srv.Config.Service.StockSettle + time.Second)
	mustRun(t, "audit", auditor.RunOnce)
	if got := remainingPlusIssued(); got != total {
		t.Fatalf("after the audit remaining + issued = %d, want %d", got, total)
	}
}

func ptr[T any](v T) *T { return &v }

// TestReturnPastExpiry: a used coupon returned after its expiry comes back
// EXPIRED, not AVAILABLE.
func TestReturnPastExpiry(t *testing.T) {
	e := newEnv(t)
	tpl := e.template(t, 10, 0, 72*time.Hour, 1)
	c := e.claim(t, tpl.Id, 1)
	saga := participant.Branch{TransType: "saga", GID: "s-exp", BranchID: "01", Op: "action"}
	req := participant.BranchRequest{UserID: 1, Code: c.Code, Order: participant.Order{OrderNo: "o-exp", UserID: 1, Amount: 10000}}
	if _, err := e.svc.Use(ctxT(t), saga, req); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(25 * time.Hour)
	res, err := e.svc.Return(ctxT(t), participant.Branch{}, participant.ReturnRequest{RequestID: "r-exp", UserID: 1, Code: c.Code, OrderNo: "o-exp"})
	if err != nil || res.Coupon.Status != participant.CouponExpired {
		t.Fatalf("Return = %+v, %v; want EXPIRED", res, err)
	}
	if got := e.stored(t, 1, c.Code); got != participant.CouponExpired {
		t.Fatalf("stored status = %s, want EXPIRED", got)
	}
}
