package app_test

import (
	"sync"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc/metadata"

	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// movable is real time moved forward by the test.
type movable struct {
	mu  sync.Mutex
	off time.Duration
}

func (m *movable) now() time.Time          { m.mu.Lock(); defer m.mu.Unlock(); return time.Now().Add(m.off) }
func (m *movable) advance(d time.Duration) { m.mu.Lock(); defer m.mu.Unlock(); m.off += d }

// TestBarrierJanitor: the coupon service's janitor deletes the barrier
// rows of finished transactions past retention, keeps those of a
// transaction still open even past max age (counted on /metrics), and a
// late duplicate Try of that kept transaction still changes nothing.
func TestBarrierJanitor(t *testing.T) {
	dtm := dtmtest.Start(t)
	clk := &movable{}
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Now = clk.now
		c.Barrier = app.BarrierJanitor{Interval: time.Hour, Retention: time.Hour, MaxAge: 48 * time.Hour, Batch: 2, Coordinator: dtm.HTTPAddr}
	})
	tpl := template(t, srv, 10)
	rows := func(user int64, gid string) int {
		t.Helper()
		var n int
		db, _ := srv.App.Store().UserShardForTest(user)
		if err := db.QueryRowContext(ctxT(t), `SELECT COUNT(*) FROM barrier WHERE gid = ?`, gid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	round := func() {
		t.Helper()
		if ran, err := srv.App.BarrierJanitor().RunOnce(ctxT(t)); err != nil || !ran {
			t.Fatalf("janitor RunOnce = %v, %v", ran, err)
		}
	}
	req := func(user int64, code, gid string) *couponv1.CouponBranchRequest {
		return &couponv1.CouponBranchRequest{UserId: user, CouponCode: code, Order: &couponv1.Order{OrderNo: gid, UserId: user, Amount: 8000}}
	}
	tx := func(gid string, user int64, code string, hold <-chan struct{}, locked chan<- struct{}) error {
		return dtmgrpc.TccGlobalTransaction2(dtm.GRPCAddr, gid, func(tcc *dtmgrpc.TccGrpc) {
			tcc.BranchHeaders, tcc.WaitResult = coupontest.BranchHeaders(t, gid, coupontcc.OrderOf(req(user, code, gid))), true
		}, func(tcc *dtmgrpc.TccGrpc) error {
			if _, err := coupontcc.Enlist(coupontest.AsShop(ctxT(t)), tcc, srv.Addr, req(user, code, gid)); err != nil {
				return err
			}
			if locked != nil {
				close(locked)
				<-hold
			}
			return nil
		})
	}
	done := claim(t, srv, tpl.Id, 8101)
	if err := tx("jan-done", 8101, done.Code, nil, nil); err != nil {
		t.Fatal(err)
	}
	open := claim(t, srv, tpl.Id, 8102)
	hold, locked, result := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() { result <- tx("jan-open", 8102, open.Code, hold, locked) }()
	<-locked
	if rows(8101, "jan-done") == 0 || rows(8102, "jan-open") == 0 {
		t.Fatal("no barrier rows to clean")
	}

	clk.advance(2 * time.Hour) // past retention
	round()
	if n := rows(8101, "jan-done"); n != 0 {
		t.Fatalf("finished transaction past retention kept %d barrier rows", n)
	}
	if n := rows(8102, "jan-open"); n == 0 {
		t.Fatal("the open transaction's barrier rows were deleted")
	}
	// A late duplicate Try of the kept transaction changes nothing.
	late := metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", "jan-open", "dtm-trans_type", "tcc", "dtm-branch_id", "01", "dtm-op", "try")
	if _, err := srv.Coupons.LockCoupon(late, req(8102, open.Code, "jan-open")); err != nil {
		t.Fatalf("late duplicate Try: %v", err)
	}
	c, err := srv.Admin.LookupCoupons(ctxT(t), &couponv1.LookupCouponsRequest{CouponCode: open.Code})
	if err != nil || c.Records[0].Coupon.Status != couponv1.Coupon_LOCKED || len(c.Records[0].Ledger) != 1 {
		t.Fatalf("coupon after the late Try = %v, %v; want LOCKED with one LOCK row", c, err)
	}

	// Past max age the open transaction's rows still stay: its Confirm or
	// Cancel, however late, must find them. They are counted on /metrics.
	kept := rows(8102, "jan-open")
	clk.advance(72 * time.Hour)
	round()
	if n := rows(8102, "jan-open"); n != kept {
		t.Fatalf("past max age the open transaction keeps %d barrier rows; want its %d", n, kept)
	}
	if v, ok := value(samples(srv.Metrics(t)), "coupon_barrier_rows_kept_unfinished"); !ok || v != float64(kept) {
		t.Errorf("coupon_barrier_rows_kept_unfinished = %v (exported %v); want %d", v, ok, kept)
	}
	close(hold)
	if err := <-result; err != nil {
		t.Fatalf("open transaction: %v", err)
	}
	testenv.Eventually(t, 30*time.Second, "the open transaction to commit", func() bool {
		c, err := srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: 8102, CouponCode: open.Code})
		return err == nil && c.Status == couponv1.Coupon_USED
	})
	// Finished now, its rows go.
	round()
	if n := rows(8102, "jan-open"); n != 0 {
		t.Errorf("the committed transaction past max age keeps %d barrier rows", n)
	}
	if v, _ := value(samples(srv.Metrics(t)), "coupon_barrier_rows_kept_unfinished"); v != 0 {
		t.Errorf("coupon_barrier_rows_kept_unfinished = %v after the transaction finished; want 0", v)
	}
}
